"""The options every tool shares, with one meaning everywhere (`slm <command> --help` lists them)."""

import argparse

SET_HELP = (
    "override a config value (repeatable): a pipeline key (cluster.workers=8, sweep.limit=20), "
    "a stage key (train.lr=1e-5: the stage run here, or every stage of a pipeline run), "
    "or a stage's key by name (repair.train.lr=1e-5)"
)


def add_pipeline_options(parser, inspect: bool = True) -> None:
    """--config (which pipeline), --store, --set; with `inspect`, --print-config and --dry-run."""
    parser.add_argument(
        "--config",
        "--pipeline",
        dest="pipeline",
        default="stages/pipeline.yaml",
        help="pipeline config (default: the embedded one, stages/pipeline.yaml)",
    )
    parser.add_argument("--store", help="store URI (a directory or s3://bucket/prefix); default: the pipeline's")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    # The old spelling of a pipeline override; --set takes pipeline keys too.
    parser.add_argument("--pipeline-set", dest="overrides", action="append", help=argparse.SUPPRESS)
    if inspect:
        parser.add_argument(
            "--print-config",
            action="store_true",
            help="print the resolved, validated configs (after --set) as YAML and exit",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="check everything and print what would be built, trained, swept and promoted; "
            "start nothing, write nothing",
        )


DRY_RUN_DONE = "dry run: nothing was started or written"


def inspect_only(args, pipeline, names: list[str], store, stages, build: bool = True) -> bool:
    """--print-config / --dry-run: say what the command would do, after every pre-launch check but the
    store's write probe. True when the command stops here (nothing started, nothing written)."""
    from slm.orchestration import plan
    from slm.orchestration.stage import check_before_launch

    if args.print_config:
        plan.print_config(pipeline, names, stages)
        return True
    if args.dry_run:
        check_before_launch(pipeline, names, store, stages, probe_store=False)
        print("\n".join(plan.dry_run(pipeline, names, store, stages, build)))
        print(f"\n{DRY_RUN_DONE}")
        return True
    return False
