"""Run data builders: local input files → sharded datasets in the store.

python launch/build_data.py repair                 # the builders the pipeline lists for a stage
python launch/build_data.py data_builders/configs/repair.yaml --force
"""

import argparse

import yaml

if not __package__:  # run as a script: python launch/<tool>.py
    import _bootstrap  # noqa: F401

from slm import STAGE_ORDER
from slm.config import BuilderConfig, load_yaml_config
from slm.data_builders import run_builder
from slm.errors import cli_main
from slm.launch.options import DRY_RUN_DONE, add_pipeline_options
from slm.orchestration import plan
from slm.orchestration.eval_sets import eval_index
from slm.orchestration.stage import open_pipeline


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="+", help="stage names or builder config files")
    add_pipeline_options(p)
    p.add_argument("--force", action="store_true", help="rebuild even when the inputs did not change")
    args = p.parse_args(argv)
    pipeline, store, _ = open_pipeline(args.pipeline, args.store, args.overrides)
    targets = [c for t in args.targets for c in (pipeline.stage(t).builders if t in STAGE_ORDER else [t])]
    if args.print_config:
        print(
            yaml.safe_dump(
                {c: load_yaml_config(c, BuilderConfig).model_dump(mode="json") for c in targets}, sort_keys=False
            ),
            end="",
        )
        return
    if args.dry_run:
        print("\n".join(plan.build_lines(targets, store, args.force)) + f"\n\n{DRY_RUN_DONE}")
        return
    evals = eval_index(pipeline)  # every evaluation the pipeline's sweeps run: rows are decontaminated against them
    for config in targets:
        manifest = run_builder(config, store, evals, force=args.force)
        rows = {k: v["rows"] for k, v in manifest.get("splits", {}).items()}
        print(f"{config}: {rows or 'ok'}")


if __name__ == "__main__":
    main()
