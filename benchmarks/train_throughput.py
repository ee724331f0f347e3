"""Training throughput: one stage on the engine (Ray Train + DeepSpeed ZeRO-2) vs a plain PyTorch loop.

Same tiny GPT-2, same pretraining blocks (with packing, the same document segments on both sides), same
global batch, same number of optimizer steps.
Rates are measured between the first logged window (warm-up) and the last step, from the engine's
own progress log, so Ray/DeepSpeed start-up and checkpoint uploads are reported separately.

    python benchmarks/train_throughput.py [--steps 300] [--workers 1 2]
    python benchmarks/train_throughput.py --smoke      # 12 steps, 1 worker: the code path, not a figure

Ends with `ratio: <engine / plain loop>` for the first worker count.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from slm import REPO_ROOT


def window_rate(rows: list[dict], warmup_step: int) -> float:
    """tokens/s between the log row at warmup_step and the last row."""
    first = next(r for r in rows if int(r["step"]) >= warmup_step)
    last = rows[-1]
    return (float(last["tokens"]) - float(first["tokens"])) / (float(last["elapsed_s"]) - float(first["elapsed_s"]))


def engine_run(store, pipeline, cfg, workers: int, tag: str) -> dict:
    from slm import cluster, engine
    from slm.recipe import StageContext
    from slm.stages import RECIPES

    pipe = pipeline.model_copy(update={"cluster": pipeline.cluster.model_copy(update={"workers": workers})})
    recipe = RECIPES["pretrain"]
    job = recipe.plan(cfg, StageContext(store, pipe))
    job = job.model_copy(update={"run_id": f"bench-{tag}", "run_prefix": f"runs/bench/{tag}"})
    cluster.connect()
    t0 = time.perf_counter()
    engine.run(job, recipe)
    wall = time.perf_counter() - t0
    log = store.root / job.run_prefix / "train" / "train_log.csv"
    rows = [r for r in csv.DictReader(open(log)) if r["loss"]]
    marker = store.tree_manifest(f"{job.run_prefix}/checkpoints/checkpoint-{cfg.train.max_steps}")
    return {
        "tokens_per_s": window_rate(rows, cfg.train.logging_steps * 2),
        "wall_s": wall,
        "upload_s": marker["upload_s"],
        "save_s": marker.get("save_s") or 0.0,
        "packing": job.packing,
    }


def plain_loop(store, cfg, threads: int, global_batch: int, packing: bool) -> dict:
    """The same model and data, one process, torch.optim.AdamW, no framework around it. With packing
    (the engine's default for pretraining) the loop gives the model the same inputs the engine does:
    each block's documents as segments (position ids restarting at every eos, labels dropped at each
    document's first token), through the engine's own collator; without it, plain causal blocks."""
    import torch
    from transformers import AutoModelForCausalLM

    from slm.datasets import load_split
    from slm.modeling import load_tokenizer, resolve_ref, scratch_config
    from slm.packing import PackedRows, document_lengths

    torch.set_num_threads(threads)
    tokenizer = load_tokenizer(resolve_ref(cfg.model.tokenizer, store, "tokenizer").materialize())
    torch.manual_seed(cfg.train.seed)
    model = AutoModelForCausalLM.from_config(scratch_config(cfg.model.architecture, tokenizer, cfg.data.max_length))
    ids = [row[: cfg.data.max_length] for row in load_split(store, cfg.data.dataset)["input_ids"]]
    if packing:
        rows = [{"input_ids": r, "labels": r, "seq_lengths": document_lengths(r, tokenizer.eos_token_id)} for r in ids]
        batches = PackedRows(tokenizer.pad_token_id)
    else:
        blocks = torch.tensor(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    model.train()
    tokens, marks = 0, {}
    start = time.perf_counter()
    for step in range(1, cfg.train.max_steps + 1):
        idx = torch.randint(0, len(ids), (global_batch,))
        if packing:
            batch = batches([rows[i] for i in idx])
            loss = model(**batch, use_cache=False).loss
        else:
            batch = blocks[idx]
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += global_batch * cfg.data.max_length
        marks[step] = (time.perf_counter() - start, tokens)
    warm = cfg.train.logging_steps * 2
    (t0, n0), (t1, n1) = marks[warm], marks[cfg.train.max_steps]
    return {"tokens_per_s": (n1 - n0) / (t1 - t0), "wall_s": t1}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--smoke", action="store_true", help="12 steps on 1 worker: checks the code path in a minute")
    args = p.parse_args()
    logging_steps = 10
    if args.smoke:
        args.steps, args.workers, logging_steps = 12, [1], 2

    from slm.config import PipelineConfig, StageConfig, load_yaml_config
    from slm.data_builders import run_builder
    from slm.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("SLM_CACHE", str(Path(tmp) / "cache"))
        store = Store.open(str(Path(tmp) / "store"))
        for builder in ("tokenizer", "pretrain"):
            run_builder(str(REPO_ROOT / f"data_builders/configs/{builder}.yaml"), store)
        pipeline = load_yaml_config(REPO_ROOT / "stages/pipeline.yaml", PipelineConfig)
        cfg = load_yaml_config(
            REPO_ROOT / "stages/configs/pretrain.yaml",
            StageConfig,
            {
                "data": {"eval_split": None},
                "train": {"max_steps": args.steps, "save_steps": args.steps, "logging_steps": logging_steps},
            },
        )
        micro = cfg.train.micro_batch * cfg.train.grad_accum
        results = []
        for workers in args.workers:
            r = engine_run(store, pipeline, cfg, workers, f"w{workers}")
            plain = plain_loop(store, cfg, threads=workers, global_batch=micro * workers, packing=r["packing"])
            results.append((workers, r, plain))
        print(
            f"\n{cfg.model.architecture['model_type']} {cfg.model.architecture}, blocks of "
            f"{cfg.data.max_length} tokens, {args.steps} steps, fp32, CPU ({os.cpu_count()} cores), "
            f"packing {'on (documents masked apart, both sides)' if results[0][1]['packing'] else 'off'}"
        )
        print(
            f"{'workers':>7} | {'engine tok/s':>12} | {'plain tok/s':>11} | {'ratio':>5} | "
            f"{'engine wall':>11} | {'ckpt save':>9} | {'ckpt upload':>11}"
        )
        for workers, r, plain in results:
            print(
                f"{workers:>7} | {r['tokens_per_s']:>12,.0f} | {plain['tokens_per_s']:>11,.0f} | "
                f"{r['tokens_per_s'] / plain['tokens_per_s']:>5.2f} | {r['wall_s']:>10.1f}s | "
                f"{r['save_s']:>8.2f}s | {r['upload_s']:>10.2f}s"
            )
        print(
            "ratio = engine / plain loop at the same global batch; the plain loop gets as many threads "
            "as the engine has workers."
        )
        workers, r, plain = results[0]
        print(f"ratio: {r['tokens_per_s'] / plain['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
