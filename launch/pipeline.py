"""Run every stage of a pipeline in order: build its data, train, sweep, select, promote, card.

python launch/pipeline.py --pipeline stages/pipeline.yaml [--store s3://bucket/prefix] [--only sft repair]
"""

import argparse
import sys
import time

if not __package__:  # run as a script: python launch/<tool>.py
    import _bootstrap  # noqa: F401

from slm import layout
from slm.errors import cli_main
from slm.launch.options import add_pipeline_options, inspect_only
from slm.orchestration.eval_sets import eval_index
from slm.orchestration.lineage import read_champion
from slm.orchestration.stage import build_data, check_before_launch, open_pipeline, run_stage
from slm.records import read_pointer
from slm.run_record import RunRecord


def run_outputs(store, record: RunRecord) -> list[tuple[str, str]]:
    """Where a stage's report and plots are, for the summary."""
    sweep = layout.sweep_dir(record.run_prefix)
    return [
        (what, store.url(key))
        for what, key in (
            ("report", layout.selection_file(sweep, "md")),
            ("sweep", layout.selection_file(sweep, "png")),
            ("loss", layout.loss_plot(record.run_prefix)),
        )
        if store.exists(key)
    ]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pipeline_options(p)
    p.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages (still in pipeline order)")
    return p.parse_args(argv)


@cli_main
def main(argv=None):
    args = parse_args(argv)
    pipeline, store, stages = open_pipeline(args.pipeline, args.store, args.overrides)
    names = [s.name for s in pipeline.stages if not args.only or s.name in args.only]
    if args.only and set(args.only) - set(names):
        pipeline.stage(sorted(set(args.only) - set(names))[0])  # raises the one-line unknown-stage error
    if inspect_only(args, pipeline, names, store, stages):
        return
    check_before_launch(pipeline, names, store, stages)
    start, summary = time.time(), []
    evals = eval_index(pipeline)
    for name in names:
        t0 = time.time()
        build_data(pipeline.stage(name).builders, store, evals)
        result = run_stage(pipeline, name, store, stages=stages)
        if "champion" in result:
            outcome = f"{pipeline.line}@{result['champion'].version}"
        elif "not_promoted" in result:
            outcome = f"not promoted ({result['not_promoted'].reason.removeprefix('not promoted: ')})"
        else:
            outcome = f"experiment {result['experiment'].name} rejected, not promoted"
        summary.append((name, outcome, time.time() - t0, run_outputs(store, result["record"])))
    print(f"\npipeline finished in {time.time() - start:.0f}s", file=sys.stderr)
    for name, outcome, seconds, outputs in summary:
        print(f"  {name:9s} → {outcome}  ({seconds:.0f}s)", file=sys.stderr)
        for what, url in outputs:
            print(f"  {'':9s}   {what:9s} {url}", file=sys.stderr)
    if not store.exists(layout.latest_pointer(pipeline.line)):
        print(f"no champion: nothing of line {pipeline.line} has been promoted", file=sys.stderr)
        return
    latest = read_pointer(store, pipeline.line)
    print(f"champion: {store.url(latest.key)}\ncard:     {store.url(latest.key + '/README.md')}", file=sys.stderr)
    for name, path in (read_champion(store, latest.key).plots or {}).items():
        print(f"plot:     {store.url(latest.key + '/' + path)}  ({name})", file=sys.stderr)
    print(store.url(latest.key))


if __name__ == "__main__":
    main()
