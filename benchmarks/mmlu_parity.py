"""Full-MMLU parity: our MMLU (the original CSVs through eval/mmlu.py) vs the `lm_eval` CLI's own `mmlu` group.

The CLI reads lm-eval's built-in tasks from a local copy of the data laid out as `cais/mmlu`. Both
score the same model on all 14,042 test items; the script prints overall and domain accuracy from
each, and how many per-item answers differ (expected: none).

    python benchmarks/mmlu_parity.py [--model DIR] [--num-fewshot 0] [--limit N]
    python benchmarks/mmlu_parity.py --smoke            # 1 item per subject (57): the code path

lm-eval's own `mmlu` group needs all 57 subjects, so this reads a full MMLU copy (../shared/data/mmlu).
Ends with `ratio: <per-item answers equal / items>` (1.00 is parity).
"""

from __future__ import annotations

import argparse
import json
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a model directory (default: a tiny random GPT-2)")
    p.add_argument("--num-fewshot", type=int, default=0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data", default=str(REPO_ROOT / "../shared/data/mmlu"))
    p.add_argument("--smoke", action="store_true", help="1 item per subject")
    args = p.parse_args()
    if args.smoke:
        args.limit = 1
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slm.eval import mmlu

    data = Path(args.data).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = Path(args.model) if args.model else make_checkpoints(work / "model", 1)[0]
        mmlu.write_hub_layout(data, work / "cais" / "mmlu", list(mmlu.SUBJECT_DOMAINS))

        t0 = time.perf_counter()
        cmd = [
            str(Path(sys.executable).parent / "lm_eval"),
            "--model",
            "hf",
            "--model_args",
            f"pretrained={model_dir},dtype=float32",
            "--tasks",
            "mmlu",
            "--num_fewshot",
            str(args.num_fewshot),
            "--batch_size",
            str(args.batch_size),
            "--device",
            "cpu",
            "--log_samples",
            "--output_path",
            str(work / "cli"),
        ] + (["--limit", str(args.limit)] if args.limit else [])
        subprocess.run(cmd, cwd=work, check=True, capture_output=True, text=True)
        cli_s = time.perf_counter() - t0
        cli = json.loads(next((work / "cli").rglob("results_*.json")).read_text())["results"]
        cli_items = {task[len("mmlu_") :]: acc for task, acc in mmlu.read_cli_samples(work / "cli").items()}

        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        lm = HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(model_dir), batch_size=args.batch_size)
        ours = mmlu.evaluate(
            lm, data, list(mmlu.SUBJECT_DOMAINS), work / "tasks", limit=args.limit, num_fewshot=args.num_fewshot
        )
        ours_s = time.perf_counter() - t0

    differing = sum(a != b for s in mmlu.SUBJECT_DOMAINS for a, b in zip(ours["items"][s], cli_items[s]))
    print(f"\nMMLU {args.num_fewshot}-shot, {ours['n']:,} items, model {model_dir}")
    print(f"{'':18} {'ours':>10} {'lm_eval mmlu':>13}")
    print(f"{'overall':18} {ours['acc']:>10.4%} {cli['mmlu']['acc,none']:>13.4%}")
    for d, v in ours["domains"].items():
        print(f"{d:18} {v['acc']:>10.4%} {cli['mmlu_' + d]['acc,none']:>13.4%}")
    print(f"per-item answers differing: {differing} of {ours['n']:,}   (time: ours {ours_s:.0f}s, CLI {cli_s:.0f}s)")
    print(f"ratio: {(ours['n'] - differing) / ours['n']:.2f}")


if __name__ == "__main__":
    main()
