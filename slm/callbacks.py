"""Trainer callbacks of the engine: progress lines with tokens/s, and checkpoints persisted to the store."""
from __future__ import annotations

import csv
import datetime as dt
import sys
import time
from pathlib import Path

import torch.distributed as dist
from transformers import TrainerCallback

from slm.store import COMPLETE, Store, sha256_file


def _barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class ProgressCallback(TrainerCallback):
    """One line per logging step on stderr (rank 0), and the same numbers in a CSV.

    HF's tqdm bar is disabled: Ray forwards worker output line by line, where carriage-return
    bars turn into noise; a plain line per logging step reads well in `ray job logs`.
    """

    FIELDS = ("step", "epoch", "loss", "eval_loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s")

    def __init__(self, stage: str, csv_path: Path):
        self.stage = stage
        self.csv_path = csv_path
        self.start = None
        self.last = None  # (time, tokens)

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()
        self.last = (self.start, state.num_input_tokens_seen)
        if state.is_world_process_zero and not self.csv_path.exists():
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.csv_path, "w", newline="") as f:
                csv.writer(f).writerow(self.FIELDS)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        tokens = state.num_input_tokens_seen
        rate = (tokens - self.last[1]) / max(now - self.last[0], 1e-9)
        self.last = (now, tokens)
        row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), "loss": logs.get("loss"),
               "eval_loss": logs.get("eval_loss"), "lr": logs.get("learning_rate"),
               "grad_norm": logs.get("grad_norm"), "tokens": tokens, "tokens_per_s": round(rate, 1),
               "elapsed_s": round(now - self.start, 2)}
        with open(self.csv_path, "a", newline="") as f:
            csv.writer(f).writerow([row[k] for k in self.FIELDS])
        if "loss" in logs or "eval_loss" in logs:
            done = state.global_step / max(state.max_steps, 1)
            eta = (now - self.start) / max(done, 1e-9) * (1 - done)
            parts = [f"[{self.stage}] step {state.global_step}/{state.max_steps} ({done:.0%})"]
            if "loss" in logs:
                parts.append(f"loss {logs['loss']:.4f}")
            if "eval_loss" in logs:
                parts.append(f"eval_loss {logs['eval_loss']:.4f}")
            if logs.get("learning_rate") is not None:
                parts.append(f"lr {logs['learning_rate']:.2e}")
            if logs.get("grad_norm") is not None:
                parts.append(f"grad {logs['grad_norm']:.2f}")
            parts.append(f"tok/s {rate:,.0f}")
            parts.append(f"eta {dt.timedelta(seconds=int(eta))}")
            print(" ".join(parts), file=sys.stderr, flush=True)


class SaveLastStepCallback(TrainerCallback):
    """Always checkpoint the final step, so the sweep sees the end of training too."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True


class StoreCheckpointCallback(TrainerCallback):
    """After the Trainer writes checkpoint-N locally, persist it to the store as a complete tree.

    Each node's local rank 0 uploads what its node wrote (HF weights, tokenizer, DeepSpeed optimizer
    shards, RNG states, trainer state); global rank 0 then writes the completion marker with every
    node's file list, last. A job killed mid-upload leaves a tree without a marker, which nothing reads.
    """

    def __init__(self, store_uri: str, run_prefix: str, local_rank: int, on_persisted=None):
        self.store_uri = store_uri
        self.run_prefix = run_prefix
        self.local_rank = local_rank
        self.on_persisted = on_persisted

    def on_save(self, args, state, control, **kwargs):
        name = f"checkpoint-{state.global_step}"
        local = Path(args.output_dir) / name
        key = f"{self.run_prefix}/checkpoints/{name}"
        _barrier()
        files = {}
        store = Store.open(self.store_uri)
        if self.local_rank == 0:
            t0 = time.perf_counter()
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                rel = path.relative_to(local).as_posix()
                store.upload_file(path, f"{key}/{rel}")
                files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
            upload_s = time.perf_counter() - t0
        else:
            upload_s = 0.0
        gathered = [None] * dist.get_world_size() if dist.is_initialized() else [files]
        if dist.is_initialized():
            dist.all_gather_object(gathered, files)
        if state.is_world_process_zero:
            merged = {}
            for part in gathered:
                merged.update(part or {})
            loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
            store.write_json(f"{key}/{COMPLETE}", {"files": merged, "step": state.global_step,
                                                   "loss": loss, "upload_s": round(upload_s, 3)})
            print(f"[checkpoint] {store.url(key)} persisted ({len(merged)} files, {upload_s:.1f}s)",
                  file=sys.stderr, flush=True)
            if self.on_persisted:
                self.on_persisted(state.global_step, key)
        _barrier()
