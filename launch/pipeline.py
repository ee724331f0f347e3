"""Run every stage of a pipeline in order: build its data, train, sweep, select, promote, card.

    python launch/pipeline.py --pipeline stages/pipeline.yaml [--store s3://bucket/prefix] [--only sft repair]
"""
import argparse
import sys
import time

import _bootstrap

from orchestration.eval_sets import eval_index
from orchestration.stage import build_data, check_before_launch, open_pipeline, run_stage
from slm import layout
from slm.errors import cli_main
from slm.records import ChampionPointer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bootstrap.add_pipeline_options(p)
    p.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages (still in pipeline order)")
    return p.parse_args(argv)


@cli_main
def main(argv=None):
    args = parse_args(argv)
    pipeline, store = open_pipeline(args.pipeline, args.store, args.overrides)
    names = [s.name for s in pipeline.stages if not args.only or s.name in args.only]
    if args.only and set(args.only) - set(names):
        pipeline.stage(sorted(set(args.only) - set(names))[0])  # raises the one-line unknown-stage error
    check_before_launch(pipeline, names, store)
    start, summary = time.time(), []
    evals = eval_index(pipeline)
    for name in names:
        t0 = time.time()
        build_data(pipeline.stage(name).builders, store, evals)
        result = run_stage(pipeline, name, store)
        if "champion" in result:
            outcome = f"{pipeline.line}@{result['champion'].version}"
        elif "not_promoted" in result:
            outcome = f"not promoted ({result['not_promoted']['reason'].removeprefix('not promoted: ')})"
        else:
            outcome = f"experiment {result['experiment']['name']} rejected, not promoted"
        report = store.url(f"{layout.sweep_dir(result['record']['run_prefix'])}/selection.md")
        summary.append((name, f"{outcome}; report {report}", time.time() - t0))
    print(f"\npipeline finished in {time.time() - start:.0f}s", file=sys.stderr)
    for name, outcome, seconds in summary:
        print(f"  {name:9s} → {outcome}  ({seconds:.0f}s)", file=sys.stderr)
    if not store.exists(layout.latest_pointer(pipeline.line)):
        print(f"no champion: nothing of line {pipeline.line} has been promoted", file=sys.stderr)
        return
    latest = ChampionPointer.model_validate(store.read_json(layout.latest_pointer(pipeline.line)))
    print(f"champion: {store.url(latest.key)}\ncard:     {store.url(latest.key + '/README.md')}", file=sys.stderr)
    print(store.url(latest.key))


if __name__ == "__main__":
    main()
