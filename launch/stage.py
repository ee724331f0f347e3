"""Run one stage: train on DeepSpeed in Ray Train workers, sweep, select, promote, write the card.

python launch/stage.py repair
python launch/stage.py repair --set train.lr=1e-5 --set cluster.workers=4
ray job submit --working-dir . -- python launch/stage.py repair --store s3://bucket/prefix
"""

import argparse

if not __package__:  # run as a script: python launch/<tool>.py
    import _bootstrap  # noqa: F401

from slm import STAGE_ORDER
from slm.errors import UserError, cli_main
from slm.launch.options import add_pipeline_options, inspect_only
from slm.launch.pipeline import run_outputs
from slm.log import log
from slm.orchestration.eval_sets import eval_index
from slm.orchestration.stage import build_data, check_before_launch, open_pipeline, run_stage


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", help=f"one of: {', '.join(STAGE_ORDER)}")
    add_pipeline_options(p)
    p.add_argument("--build-data", action="store_true", help="run the stage's data builders first")
    p.add_argument("--train-only", action="store_true", help="train (or resume) without sweep/promotion")
    return p.parse_args(argv)


@cli_main
def main(argv=None):
    args = parse_args(argv)
    if args.stage not in STAGE_ORDER:
        raise UserError(f"unknown stage {args.stage!r}: choose one of {', '.join(STAGE_ORDER)}")
    pipeline, store, stages = open_pipeline(args.pipeline, args.store, args.overrides, stage=args.stage)
    ref = pipeline.stage(args.stage)
    if inspect_only(args, pipeline, [args.stage], store, stages, build=args.build_data):
        return
    check_before_launch(pipeline, [args.stage], store, stages)
    if args.build_data:
        build_data(ref.builders, store, eval_index(pipeline))
    result = run_stage(pipeline, args.stage, store, train_only=args.train_only, stages=stages)
    for what, url in run_outputs(store, result["record"]):
        log(f"{what:7s} {url}")
    if "champion" in result:
        print(store.url(result["champion"].key))
    elif "experiment" in result:
        print(f"experiment {result['experiment'].name} rejected: {result['experiment'].reason}")


if __name__ == "__main__":
    main()
