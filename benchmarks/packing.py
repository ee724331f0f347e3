"""Packing: useful (supervised) tokens per second, packed rows vs examples padded to the batch's longest.

Same model, same optimizer, same micro-batch of rows per step, same collators the stages use
(slm/examples.py `padding_collator`, slm/packing.py `PackedRows`), forward + backward + AdamW step
timed after two warm-up steps. "Useful" tokens are the labelled ones (the assistant's), the tokens
an SFT step learns from.

The corpus is a chat mix with a long spread of lengths: GSM8K test (1,319 worked answers, long)
and TruthfulQA (817 best answers, short), one user turn and one assistant turn each, from
../shared/data; the tokenizer is SmolLM2's when `make real-model` has run, else the project's tiny
one. `--smoke` reads the shipped SFT fixture and the authored format set instead (the code path,
not a figure).

    python benchmarks/packing.py [--steps 30] [--max-length 512] [--micro-batch 8]
    python benchmarks/packing.py --smoke

Ends with `ratio: <packed useful tokens/s / padded useful tokens/s>`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from slm import REPO_ROOT

SHARED = REPO_ROOT / "../shared/data"
SMOLLM2 = REPO_ROOT / "artifacts/real/smollm2-135m"


def chat(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def corpus(smoke: bool) -> tuple[list[list[dict]], str]:
    if smoke:
        files = [REPO_ROOT / "data_builders/fixtures/sft/instructions.jsonl"]
        files.append(REPO_ROOT / "data_builders/authored/format_discipline.jsonl")
        rows = [json.loads(line)["messages"] for f in files for line in f.read_text().splitlines() if line.strip()]
        return rows, "the shipped SFT fixture and format set"
    if not (SHARED / "gsm8k/test.jsonl").is_file():
        sys.exit(f"packing benchmark: needs ../shared/data (GSM8K and TruthfulQA) at {SHARED}; try --smoke")
    rows = [chat(r["question"], r["answer"]) for r in map(json.loads, open(SHARED / "gsm8k/test.jsonl"))]
    with open(SHARED / "truthfulqa/TruthfulQA.csv", encoding="utf-8-sig") as f:
        rows += [chat(r["Question"], r["Best Answer"]) for r in csv.DictReader(f)]
    return rows, "GSM8K test + TruthfulQA (../shared/data)"


def tokenizer_for(smoke: bool):
    from slm.modeling import load_tokenizer

    if not smoke and (SMOLLM2 / "tokenizer.json").is_file():
        tokenizer = load_tokenizer(SMOLLM2, False, None)
        from slm.padding import apply_pad, plan_pad

        apply_pad(tokenizer, plan_pad(tokenizer, "benchmark"))
        return tokenizer, "SmolLM2-135M-Instruct's"
    from benchmarks.tiny_checkpoints import tiny_tokenizer

    return tiny_tokenizer(), "the project's tiny BPE"


def timed_steps(model, batches: list[dict], warmup: int = 2) -> tuple[float, int, int]:
    """Seconds, useful tokens and total row tokens of the steps after the warm-up ones."""
    import torch

    from slm.packing import forward_inputs

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    seconds, useful, total = 0.0, 0, 0
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        loss = model(**forward_inputs(batch), labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            seconds += time.perf_counter() - start
            useful += int((batch["labels"][:, 1:] != -100).sum())
            total += batch["input_ids"].numel()
    return seconds, useful, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.max_length, args.micro_batch = 4, 128, 4

    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, LlamaConfig

    from slm.chat import IGNORE_INDEX, encode_chat
    from slm.examples import padding_collator
    from slm.packing import PackedRows, pack_examples

    torch.set_num_threads(os.cpu_count() or 1)  # one process: every core
    rows, corpus_name = corpus(args.smoke)
    tokenizer, tokenizer_name = tokenizer_for(args.smoke)
    examples = []
    for messages in rows:
        example = encode_chat(tokenizer, messages, args.max_length)
        if any(label != IGNORE_INDEX for label in example["labels"]):
            examples.append(example)
    lengths = np.array([len(e["input_ids"]) for e in examples])
    print(
        f"corpus: {corpus_name}, {len(examples):,} conversations, tokenizer {tokenizer_name}; tokens per "
        f"conversation p10 {np.percentile(lengths, 10):.0f}, median {np.median(lengths):.0f}, p90 "
        f"{np.percentile(lengths, 90):.0f}, max {lengths.max()} (max_length {args.max_length})"
    )
    needed = args.steps * args.micro_batch
    random.Random(0).shuffle(examples)  # the Trainer's sampler shuffles: batches mix long and short
    padded_rows = (examples * (needed // len(examples) + 1))[:needed]
    packed = pack_examples(Dataset.from_list(examples), args.max_length, {})
    order = list(range(len(packed)))
    random.Random(0).shuffle(order)
    packed_rows = [packed[i] for i in (order * (needed // len(order) + 1))[:needed]]
    pad, pack = padding_collator(tokenizer), PackedRows(tokenizer.pad_token_id)
    groups = range(0, needed, args.micro_batch)

    def fresh_model():
        torch.manual_seed(0)
        config = LlamaConfig(
            hidden_size=256,
            intermediate_size=704,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=args.max_length,
            pad_token_id=tokenizer.pad_token_id,
        )
        return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").train()

    results = {}
    for name, collate, source in (("padded", pad, padded_rows), ("packed", pack, packed_rows)):
        batches = [collate(source[i : i + args.micro_batch]) for i in groups]
        seconds, useful, total = timed_steps(fresh_model(), batches)
        results[name] = {"rate": useful / seconds, "useful": useful, "total": total, "seconds": seconds}
        print(
            f"{name}: {useful / seconds:,.0f} useful tokens/s ({useful:,} labelled of {total:,} row tokens, "
            f"{useful / total:.0%}; {seconds:.1f}s for {len(batches) - 2} timed steps of {args.micro_batch} rows)"
        )
    per_row = len(examples) / len(packed)
    print(f"packing: {len(examples):,} conversations into {len(packed):,} rows ({per_row:.1f} per row)")
    print(f"ratio: {results['packed']['rate'] / results['padded']['rate']:.2f}")


if __name__ == "__main__":
    main()
