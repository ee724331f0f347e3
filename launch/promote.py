"""Promote a swept candidate of a run to `champions/<line>/<version>/` and move `latest.json`.

By default the selection's champion is promoted (what `launch/stage.py` does after a sweep); name
another candidate to overrule the selection, or give --reason to promote a champion the gate kept out;
the choice and your reason go to champion.json and the card. `latest` only moves forward by itself;
--rollback moves it back on purpose, recorded in the line's history and the next card.

    python launch/promote.py runs/repair/repair-1a2b3c4d5e [--candidate checkpoint-20 --reason "..."]
    python launch/promote.py --rollback v3-distill --reason "v4 answers in the wrong language"
"""

import argparse

import yaml

if not __package__:  # run as a script: python launch/<tool>.py
    import _bootstrap  # noqa: F401

from slm.errors import UserError, cli_main
from slm.launch.options import add_pipeline_options
from slm.orchestration.promotion import promote_run, rollback
from slm.orchestration.stage import open_pipeline

DRY = "\n\ndry run: nothing was written"


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="the run's key in the store, runs/<stage>/<run_id>")
    p.add_argument("--rollback", metavar="VERSION", help="move the line's latest back to this older version")
    p.add_argument("--candidate", help="a candidate of the run's sweep (default: the selected champion)")
    p.add_argument("--reason", help="why a candidate other than the selected one is promoted")
    add_pipeline_options(p)
    args = p.parse_args(argv)
    for flag, value in (("--candidate", args.candidate), ("--reason", args.reason), ("--rollback", args.rollback)):
        if value is not None and not value.strip():  # '' would read as "not given"
            raise UserError(f"{flag} is empty; give it a value, or leave the flag out")
    pipeline, store, _ = open_pipeline(args.pipeline, args.store, args.overrides, existing_store=True)
    if args.print_config:
        return print(yaml.safe_dump(pipeline.model_dump(mode="json"), sort_keys=False), end="")
    if args.rollback:
        if args.run or args.candidate or not args.reason:
            raise UserError("--rollback VERSION takes --reason and no run or --candidate")
        pointer = rollback(store, pipeline.line, args.rollback, args.reason, write=not args.dry_run)
        return print(
            f"would move {pipeline.line}'s latest back to {pointer.version}{DRY}"
            if args.dry_run
            else store.url(pointer.key)
        )
    if not args.run:
        raise UserError("name the run to promote from (runs/<stage>/<run_id>), or give --rollback VERSION")
    run = args.run.strip("/")
    name, version, pointer = promote_run(pipeline, store, run, args.candidate, args.reason, write=not args.dry_run)
    print(
        f"would promote {name} of {run} as {pipeline.line}@{version}{DRY}" if args.dry_run else store.url(pointer.key)
    )


if __name__ == "__main__":
    main()
