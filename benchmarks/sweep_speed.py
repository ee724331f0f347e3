"""Sweep speed: N checkpoints scored on MMLU by our sweep vs the `lm_eval` CLI run once per checkpoint.

Our sweep builds and tokenizes the requests once (lm-eval's request cache + reused encodings) and
scores checkpoints in parallel as Ray tasks (the first alone on every CPU while it fills the cache, the
rest one CPU each); the baseline is what a user does by hand: one `lm_eval` process per checkpoint,
same tasks (MMLU's test split), same batch size. Prints both wall times, their ratio, and whether
every per-item answer is identical.

    python benchmarks/sweep_speed.py                    # full MMLU (14,042 items) × 5 checkpoints: long on a CPU
    python benchmarks/sweep_speed.py --limit 10         # 570 items per checkpoint
    python benchmarks/sweep_speed.py --smoke            # 2 checkpoints × the 6 shipped subjects, 2 items each

Ends with `ratio: <lm_eval time / our time>`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from benchmarks.tiny_checkpoints import make_checkpoints
from slm import REPO_ROOT

SHIPPED_MMLU = REPO_ROOT / "eval/data/mmlu"  # 6 subjects, inside the repository


def lm_eval_once_per_checkpoint(
    paths, data: Path, subjects: list[str], limit, batch_size: int, work: Path
) -> tuple[float, dict]:
    from slm.eval import mmlu

    tasks = work / "tasks"
    mmlu.write_tasks(data, subjects, tasks)
    items = {}
    start = time.perf_counter()
    for path in paths:
        out = work / f"cli-{path.name}"
        cmd = [
            str(Path(sys.executable).parent / "lm_eval"),
            "--model",
            "hf",
            "--model_args",
            f"pretrained={path},dtype=float32",
            "--include_path",
            str(tasks),
            "--tasks",
            mmlu.GROUP,
            "--batch_size",
            str(batch_size),
            "--device",
            "cpu",
            "--log_samples",
            "--output_path",
            str(out),
        ] + (["--limit", str(limit)] if limit else [])
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        items[path.name] = {task[len(mmlu.GROUP) + 1 :]: acc for task, acc in mmlu.read_cli_samples(out).items()}
    return time.perf_counter() - start, items


def our_sweep(paths, data: Path, subjects, limit, batch_size: int) -> tuple[float, dict]:
    from slm import cluster
    from slm.config import SweepSpec
    from slm.eval.scores import Candidate
    from slm.eval.sweep import sweep
    from slm.store import Store

    store = Store.open(str(paths[0].parent / "store"))
    candidates = []
    for path in paths:
        key = f"runs/bench/checkpoints/{path.name}"
        store.put_tree(path, key)
        candidates.append(Candidate(name=path.name, key=key, kind="checkpoint"))
    # the test split only, as the lm_eval side scores it (the sweep's default also scores the dev split)
    spec = SweepSpec(
        mmlu_dir=str(data), subjects=subjects, limit=limit, bench=None, mmlu_dev=False, batch_size=batch_size
    )
    cluster.connect()
    start = time.perf_counter()
    scored = sweep(store, candidates, spec, "runs/bench/sweep")
    elapsed = time.perf_counter() - start
    return elapsed, {name: c.scored.mmlu.items for name, c in scored.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", type=int, default=5)
    p.add_argument("--limit", type=int, default=None, help="items per subject (default: all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data", default=str(REPO_ROOT / "../shared/data/mmlu"))
    p.add_argument("--smoke", action="store_true", help="2 checkpoints, the shipped 6 subjects, 2 items each")
    args = p.parse_args()
    if args.smoke:
        args.checkpoints, args.limit, args.data = 2, 2, str(SHIPPED_MMLU)
    data = Path(args.data).resolve()
    from slm.eval import mmlu

    subjects = sorted(p.name.removesuffix("_test.csv") for p in (data / "test").glob("*_test.csv"))
    subjects = "all" if len(subjects) == len(mmlu.SUBJECT_DOMAINS) else subjects
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SLM_CACHE"] = str(work / "cache")  # cold caches: the sweep pays for building once
        paths = make_checkpoints(work / "ckpts", args.checkpoints)
        ours, our_items = our_sweep(paths, data, subjects, args.limit, args.batch_size)
        listed = list(mmlu.SUBJECT_DOMAINS) if subjects == "all" else subjects
        cli, cli_items = lm_eval_once_per_checkpoint(paths, data, listed, args.limit, args.batch_size, work)
        identical = all(our_items[name] == cli_items[name] for name in cli_items)
        n = sum(len(v) for v in next(iter(our_items.values())).values())
        print(
            f"\nMMLU, {n:,} items per checkpoint × {args.checkpoints} checkpoints, 2-layer/64-wide GPT-2, "
            f"batch {args.batch_size}, CPU ({os.cpu_count()} cores)"
        )
        print(f"lm_eval once per checkpoint : {cli:8.1f} s")
        print(f"our sweep (one build, Ray) : {ours:8.1f} s")
        print(f"per-item answers identical : {identical}")
        print(f"ratio: {cli / ours:.2f}")
        if not identical:
            raise SystemExit("per-item answers differ between our sweep and lm_eval")


if __name__ == "__main__":
    main()
