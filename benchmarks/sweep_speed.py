"""Sweep speed: N checkpoints scored on MMLU by our sweep vs the `lm_eval` CLI run once per checkpoint.

Our sweep builds and tokenizes the requests once (lm-eval's request cache + reused encodings) and
scores checkpoints in parallel as Ray tasks; the baseline is what a user does by hand: one `lm_eval`
process per checkpoint, same tasks, same batch size. Prints both wall times, their ratio, and
whether every per-item answer is identical.

    python benchmarks/sweep_speed.py                    # full MMLU (14,042 items) × 5 checkpoints: long on a CPU
    python benchmarks/sweep_speed.py --limit 10         # 570 items per checkpoint
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

from benchmarks.tiny_checkpoints import make_checkpoints  # noqa: E402
from slm import REPO_ROOT  # noqa: E402


def lm_eval_once_per_checkpoint(paths, data: Path, limit, batch_size: int, work: Path) -> tuple[float, dict]:
    from slm.eval import mmlu

    tasks = work / "tasks"
    mmlu.write_tasks(data, list(mmlu.SUBJECT_DOMAINS), tasks)
    items = {}
    start = time.perf_counter()
    for path in paths:
        out = work / f"cli-{path.name}"
        cmd = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf",
               "--model_args", f"pretrained={path},dtype=float32", "--include_path", str(tasks),
               "--tasks", mmlu.GROUP, "--batch_size", str(batch_size), "--device", "cpu",
               "--log_samples", "--output_path", str(out)] + (["--limit", str(limit)] if limit else [])
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        items[path.name] = {task[len(mmlu.GROUP) + 1:]: acc for task, acc in mmlu.read_cli_samples(out).items()}
    return time.perf_counter() - start, items


def our_sweep(paths, data: Path, limit, batch_size: int) -> tuple[float, dict]:
    from slm.eval.sweep import sweep
    from slm import cluster
    from slm.config import SweepSpec
    from slm.store import Store

    store = Store.open(str(paths[0].parent / "store"))
    candidates = []
    for path in paths:
        store.put_tree(path, f"runs/bench/checkpoints/{path.name}")
        candidates.append({"name": path.name, "key": f"runs/bench/checkpoints/{path.name}", "kind": "checkpoint"})
    spec = SweepSpec(mmlu_dir=str(data), subjects="all", limit=limit, bench=None, batch_size=batch_size)
    cluster.connect()
    start = time.perf_counter()
    scored = sweep(store, candidates, spec, "runs/bench/sweep")
    elapsed = time.perf_counter() - start
    return elapsed, {name: c["scores"]["mmlu"]["items"] for name, c in scored.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", type=int, default=5)
    p.add_argument("--limit", type=int, default=None, help="items per subject (default: all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data", default=str(REPO_ROOT / "../shared/data/mmlu"))
    args = p.parse_args()
    data = Path(args.data).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SLM_CACHE"] = str(work / "cache")  # cold caches: the sweep pays for building once
        paths = make_checkpoints(work / "ckpts", args.checkpoints)
        ours, our_items = our_sweep(paths, data, args.limit, args.batch_size)
        cli, cli_items = lm_eval_once_per_checkpoint(paths, data, args.limit, args.batch_size, work)
        identical = all(our_items[name] == cli_items[name] for name in cli_items)
        n = sum(len(v) for v in next(iter(our_items.values())).values())
        print(f"\nMMLU, {n:,} items per checkpoint × {args.checkpoints} checkpoints, 2-layer/64-wide GPT-2, "
              f"batch {args.batch_size}, CPU ({os.cpu_count()} cores)")
        print(f"lm_eval once per checkpoint : {cli:8.1f} s")
        print(f"our sweep (one build, Ray) : {ours:8.1f} s")
        print(f"ratio                      : {cli / ours:8.2f}x faster   per-item answers identical: {identical}")


if __name__ == "__main__":
    main()
