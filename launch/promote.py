"""Promote a swept candidate of a run to `champions/<line>/<version>/` and move `latest.json`.

By default the selection's champion is promoted (what `launch/stage.py` does after a sweep); name
another candidate to overrule the selection, or give --reason to promote a champion the gate kept out
(significantly worse than the stage's input model); the choice and your reason are kept in
champion.json and shown in the card.

    python launch/promote.py runs/repair/repair-1a2b3c4d5e
    python launch/promote.py runs/repair/repair-1a2b3c4d5e --candidate checkpoint-20 --reason "..."
    python launch/promote.py --rollback v3-distill --reason "v4 answers in the wrong language"

`latest` only moves forward by itself: re-promoting weights that are already a champion changes
nothing. --rollback moves it back to an older version on purpose; who, when and why go to the
line's history and the next card.
"""
import argparse

import yaml

if not __package__:  # run as a script: python launch/<tool>.py
    import _bootstrap  # noqa: F401

from slm.launch.options import add_pipeline_options
from slm.eval.scores import Candidate, Selection
from slm.orchestration.promotion import find_promoted, promote_champion, rollback
from slm.orchestration.stage import open_pipeline
from slm.orchestration.sweeping import precursor_of
from slm import layout
from slm.errors import UserError, cli_main


def refuse_rewind(store, line: str, run: str, candidate: Candidate, run_id: str) -> None:
    """Promoting weights that are already an older champion would not move `latest` (it only moves
    forward): say so and name the rollback, instead of exiting 0 with nothing done."""
    version = find_promoted(store, line, run_id, candidate.weights_digest)
    if version and store.exists(layout.latest_pointer(line)):
        latest = store.read_json(layout.latest_pointer(line))["version"]
        if latest != version:
            raise UserError(f"{run}: {candidate.name} is already champion {line}@{version}; latest is {latest} and "
                            f"promotion only moves it forward (to move it back: python launch/promote.py "
                            f"--rollback {version} --reason '...')")


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="the run's key in the store, runs/<stage>/<run_id>")
    p.add_argument("--rollback", metavar="VERSION", help="move the line's latest back to this older version")
    p.add_argument("--candidate", help="a candidate of the run's sweep (default: the selected champion)")
    p.add_argument("--reason", help="why a candidate other than the selected one is promoted")
    add_pipeline_options(p)
    args = p.parse_args(argv)
    pipeline, store = open_pipeline(args.pipeline, args.store, args.overrides, existing_store=True)
    if args.print_config:
        print(yaml.safe_dump(pipeline.model_dump(mode="json"), sort_keys=False), end="")
        return
    if args.rollback:
        if args.run or args.candidate or not args.reason:
            raise UserError("--rollback VERSION takes --reason and no run or --candidate")
        pointer = rollback(store, pipeline.line, args.rollback, args.reason, write=not args.dry_run)
        if args.dry_run:
            print(f"would move {pipeline.line}'s latest back to {pointer.version}\n\ndry run: nothing was written")
            return
        print(store.url(pointer.key))
        return
    if not args.run:
        raise UserError("name the run to promote from (runs/<stage>/<run_id>), or give --rollback VERSION")
    run = args.run.strip("/")
    if not layout.RUN_KEY.fullmatch(run):
        raise UserError(f"{args.run!r} is not a run key (runs/<stage>/<stage>-<digest>, as the stage's log prints it)")
    if not store.exists(f"{layout.sweep_dir(run)}/selection.json"):
        raise UserError(f"{store.url(run)}: no sweep/selection.json; run the stage's sweep first")
    record = store.read_json(layout.run_record(run))
    selection = Selection.model_validate(store.read_json(f"{layout.sweep_dir(run)}/selection.json"))
    name = args.candidate or selection.champion
    kinds = {c.name: c.kind for c in selection.candidates}
    if kinds.get(name) in (None, "precursor", "incumbent") or not store.exists(f"{layout.sweep_dir(run)}/{name}.json"):
        names = ", ".join(n for n, kind in kinds.items() if kind not in ("precursor", "incumbent"))
        raise UserError(f"{name!r} is not a candidate of {run} (candidates: {names})")
    if name != selection.champion and not args.reason:
        raise UserError(f"{name} is not the selected champion ({selection.champion}); give --reason")
    gate_failed = selection.gate is not None and not selection.gate["passed"]
    if gate_failed and not args.reason:
        raise UserError(f"{run}: {selection.champion} was {selection.gate['reason']}; give --reason to promote "
                        f"{name} anyway")
    candidate = Candidate.model_validate(store.read_json(f"{layout.sweep_dir(run)}/{name}.json"))
    if name != selection.champion or gate_failed:
        overruled = [what for what, yes in ((f"the selection ({selection.champion})", name != selection.champion),
                                            ("the gate against the input model", gate_failed)) if yes]
        candidate = candidate.model_copy(update={"manual": {"overrules": " and ".join(overruled),
                                                            "reason": args.reason}})
    refuse_rewind(store, pipeline.line, run, candidate, record["run_id"])
    if args.dry_run:
        print(f"would promote {name} of {run} as {pipeline.line}@{layout.next_version(store, pipeline.line, record['stage'])}"
              f"\n\ndry run: nothing was written")
        return
    pointer = promote_champion(pipeline, record, candidate, precursor_of(record, store.uri), store)
    print(store.url(pointer.key))


if __name__ == "__main__":
    main()
