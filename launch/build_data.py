"""Run data builders: local input files → sharded datasets in the store.

    python launch/build_data.py repair                 # the builders the pipeline lists for a stage
    python launch/build_data.py data_builders/configs/repair.yaml --force
"""
import argparse

import _bootstrap

from data_builders import run_builder
from orchestration.eval_sets import eval_index
from orchestration.stage import open_pipeline
from slm import STAGE_ORDER
from slm.errors import cli_main


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="+", help="stage names or builder config files")
    _bootstrap.add_pipeline_options(p)
    p.add_argument("--force", action="store_true", help="rebuild even when the inputs did not change")
    args = p.parse_args(argv)
    pipeline, store = open_pipeline(args.pipeline, args.store, args.overrides)
    evals = eval_index(pipeline)  # every evaluation the pipeline's sweeps run: rows are decontaminated against them
    for target in args.targets:
        configs = pipeline.stage(target).builders if target in STAGE_ORDER else [target]
        for config in configs:
            manifest = run_builder(config, store, evals, force=args.force)
            rows = {k: v["rows"] for k, v in manifest.get("splits", {}).items()}
            print(f"{config}: {rows or 'ok'}")


if __name__ == "__main__":
    main()
