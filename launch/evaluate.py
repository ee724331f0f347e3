"""Score models on the sweep's MMLU settings and bench, with the stage sweeps' cache and report.

    python launch/evaluate.py path/to/model hf:HuggingFaceTB/SmolLM2-135M-Instruct
    python launch/evaluate.py runs/sft/<run_id> champion:tiny-ff --select --merge
    python launch/evaluate.py store:models/base --set sweep.subjects=all --set sweep.limit=null

A model is a local directory, `hf:<repo>[@revision]`, `s3://bucket/key`, `store:<key>`,
`champion:<line>[:<stage>|@<version>]`, or `runs/<stage>/<run_id>` (every checkpoint of that run).
The report (JSON, Markdown, PNG) goes to `evaluations/<name>/sweep/` in the store.
"""

import argparse

import yaml

if not __package__:  # run as a script: python launch/<tool>.py
    import _bootstrap  # noqa: F401

from slm import layout
from slm.errors import cli_main
from slm.eval.report import markdown_table
from slm.launch.options import DRY_RUN_DONE, add_pipeline_options
from slm.orchestration import plan
from slm.orchestration.evaluate import candidates_of, check_settings, evaluate
from slm.orchestration.stage import open_pipeline


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model references or run keys")
    add_pipeline_options(p)
    p.add_argument("--name", help="report name under evaluations/ (default: a digest of the models and settings)")
    p.add_argument("--select", action="store_true", help="choose a champion under the pipeline's selection policy")
    p.add_argument("--merge", action="store_true", help="SLERP the champion with the runner-up and score the merges")
    p.add_argument(
        "--baseline",
        metavar="MODEL",
        help="judge every other model against this one with the stage gate's tests (verdicts to gate.json; "
        "exit 0 either way)",
    )
    args = p.parse_args(argv)
    pipeline, store, _ = open_pipeline(args.pipeline, args.store, args.overrides)
    if args.print_config:
        print(
            yaml.safe_dump(
                {
                    k: v
                    for k, v in pipeline.model_dump(mode="json").items()
                    if k in ("store", "sweep", "selection", "merge")
                },
                sort_keys=False,
            ),
            end="",
        )
        return
    if args.dry_run:
        check_settings(pipeline)
        candidates_of(args.models, store)  # every reference resolved (no weights fetched), as the real run does
        extra = (" and choose a champion" if args.select else "") + (" (with SLERP merges)" if args.merge else "")
        if args.baseline:
            candidates_of([args.baseline], store)
            extra += f", then judge each against {args.baseline} ({plan.gate_power(pipeline)})"
        print(f"score {', '.join(args.models)} on {plan.sweep_plan(pipeline)}{extra}\n\n{DRY_RUN_DONE}")
        return
    out, report = evaluate(pipeline, store, args.models, args.name, args.select, args.merge, args.baseline)
    print(markdown_table(report))
    if args.baseline:
        verdicts = store.read_json(f"{out}/gate.json")
        for judged in verdicts["judged"]:
            print(f"\n{judged['model']} vs {args.baseline}: {'passed' if judged['passed'] else 'FAILED'}")
            for t in judged["tests"]:
                verdict = f"  {'pass' if t['passed'] else 'FAIL'}  {t['name']:<26} n={t['n']:<6}"
                if t["kind"] == "continuous":
                    low, high = t["interval"]
                    print(
                        f"{verdict} effect {t['effect']:+.3f} {t['unit']} [{low:+.3f}, {high:+.3f}]  "
                        f"p = {t['p']:.3g}  (floor -{t['floor']:g})"
                    )
                else:
                    seen = "—" if t["detectable"] is None else f"{t['detectable']:.1%}"
                    print(f"{verdict} effect {t['effect']:+.1%}  p = {t['p']:.3g}  (sees drops >= {seen})")
        print(store.url(f"{out}/gate.json"))
    print(store.url(layout.selection_file(layout.sweep_dir(out), "md")))


if __name__ == "__main__":
    main()
