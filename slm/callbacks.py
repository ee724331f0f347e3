"""Trainer callbacks of the engine: progress lines with tokens/s, and checkpoints persisted to the store."""

from __future__ import annotations

import csv
import datetime as dt
import math
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from slm import layout
from slm.checkpoints import prune_resume_state
from slm.errors import UserError
from slm.log import log
from slm.mfu import mfu
from slm.modeling import load_model
from slm.packing import forward_inputs
from slm.refs import ModelRef
from slm.store import Store


def _to(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value  # flash-attention's max lengths are ints


def _barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class ProgressCallback(TrainerCallback):
    """Every logging step in a CSV; about `LINES` progress lines per run on stderr (rank 0): the first
    step, every tenth of the run, each evaluation and the last step, with tokens/s since the last line.

    HF's tqdm bar is disabled: Ray forwards worker output line by line, where carriage-return
    bars turn into noise; a few plain lines read well in `ray job logs`.
    """

    LINES = 10

    FIELDS = (
        "step",
        "epoch",
        "loss",
        "eval_loss",
        "lr",
        "grad_norm",
        "kl",
        "kl_weight",
        "distill_kl",
        "tokens",
        "tokens_per_s",
        "mfu",
        "elapsed_s",
    )

    def __init__(
        self, stage: str, csv_path: Path, flops_per_token: float | None = None, peak_tflops_total: float | None = None
    ):
        self.stage = stage
        self.csv_path = csv_path
        self.flops_per_token = flops_per_token
        self.peak_tflops_total = peak_tflops_total
        self.start = None
        self.last = None  # (time, tokens) at the last logging step
        self.shown = None  # (time, tokens) at the last printed line

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()
        self.last = self.shown = (self.start, state.num_input_tokens_seen)
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
        row = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0, 4),
            "loss": logs.get("loss"),
            "eval_loss": logs.get("eval_loss"),
            "lr": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "kl": logs.get("kl"),
            "kl_weight": logs.get("kl_weight"),
            "distill_kl": logs.get("distill_kl"),
            "tokens": tokens,
            "tokens_per_s": round(rate, 1),
            "mfu": None,
            "elapsed_s": round(now - self.start, 2),
        }
        if self.flops_per_token and rate > 0:
            value = mfu(rate, self.flops_per_token, self.peak_tflops_total)
            row["mfu"] = round(value, 5) if value is not None else None
        with open(self.csv_path, "a", newline="") as f:
            csv.writer(f).writerow([row[k] for k in self.FIELDS])
        every = max(1, state.max_steps // self.LINES)
        due = state.global_step in (1, state.max_steps) or state.global_step % every == 0
        if ("loss" in logs and due) or "eval_loss" in logs:
            if "loss" in logs:
                rate = (tokens - self.shown[1]) / max(now - self.shown[0], 1e-9)
                self.shown = (now, tokens)
            done = state.global_step / max(state.max_steps, 1)
            eta = (now - self.start) / max(done, 1e-9) * (1 - done)
            parts = [f"[{self.stage}] step {state.global_step}/{state.max_steps} ({done:.0%})"]
            if "loss" in logs:
                parts.append(f"loss {logs['loss']:.4f}")
            if "eval_loss" in logs:
                ppl = math.exp(logs["eval_loss"]) if logs["eval_loss"] < 700 else math.inf
                parts.append(f"eval_loss {logs['eval_loss']:.4f} (perplexity {ppl:,.1f})")
            if logs.get("learning_rate") is not None:
                parts.append(f"lr {logs['learning_rate']:.2e}")
            if logs.get("grad_norm") is not None:
                parts.append(f"grad {logs['grad_norm']:.2f}")
            for name in ("kl", "distill_kl"):
                if logs.get(name) is not None:
                    parts.append(f"{name} {logs[name]:.4f}")
            if "loss" in logs:
                parts.append(f"tok/s {rate:,.0f}")
            if row["mfu"] is not None:
                parts.append(f"MFU {row['mfu']:.1%}")
            if state.global_step:  # the step-0 evaluation comes before any step to time
                parts.append(f"eta {dt.timedelta(seconds=int(eta))}")
            log(" ".join(parts))


class SaveLastStepCallback(TrainerCallback):
    """Always checkpoint the final step, so the sweep sees the end of training too."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True


class InitGateCallback(TrainerCallback):
    """Plan 004's fail-fast (`train.init_gate`): before the first optimizer step, a pretrained init's loss
    must be at most `max_loss` and below ln(vocab), what a fresh random init scores; otherwise the weights
    most likely did not load (a random or truncated init, the wrong tokenizer) and every rank stops with
    one line before the run spends its budget. The old check read the first logged loss after training.

    With a validation split the loss is HF's eval_on_start evaluation (the step-0 point of the validation
    curve, in the precision training uses). Without one, each worker scores its own `batches` micro-batches
    of the first training rows in dataset order, not through the Trainer's sampler, so the shuffle's random
    state and a resume's data position are untouched; the token-weighted mean is all-reduced, so every rank
    reaches the same verdict. Only a run's first start is gated (a resume starts from its own checkpoint).
    Rank 0 writes the measurement to the store; a Ray Train restart of a refused attempt refuses again
    from that record instead of loading the model again."""

    def __init__(self, spec, job, store: Store, train_data, has_eval: bool, vocab_size: int):
        self.spec, self.job, self.store = spec, job, store
        self.train_data, self.has_eval, self.vocab_size = train_data, has_eval, vocab_size
        self.collator = None  # the Trainer's, set once it is built
        self.judged = False

    def refuse_again(self) -> None:
        key = layout.init_gate(self.job.run_prefix)
        if self.store.exists(key):
            earlier = self.store.read_json(key)
            if not earlier["passed"] and earlier["attempt"] == self.job.attempt:
                raise UserError(earlier["message"])

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self.has_eval:
            loss, rows = self.measure(model, args)
            self.judge(loss, f"the first {rows:,} training rows", state)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.has_eval and not self.judged and state.global_step == 0:
            self.judge(float(metrics["eval_loss"]), "the validation split", state)

    def measure(self, model, args) -> tuple[float, int]:
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        per_rank = self.spec.batches * args.per_device_train_batch_size
        lo, hi = min(rank * per_rank, len(self.train_data)), min((rank + 1) * per_rank, len(self.train_data))
        total = torch.zeros(2, dtype=torch.float64, device=args.device)  # Σ loss·tokens, Σ tokens
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for start in range(lo, hi, args.per_device_train_batch_size):
                rows = [self.train_data[i] for i in range(start, min(start + args.per_device_train_batch_size, hi))]
                batch = self.collator(rows)
                inputs = {
                    k: _to(v, args.device) for k, v in {**forward_inputs(batch), "labels": batch["labels"]}.items()
                }
                tokens = int((inputs["labels"][:, 1:] != -100).sum())  # the targets HF's shifted loss averages
                if tokens:
                    total[0] += float(model(**inputs).loss) * tokens
                    total[1] += tokens
        model.train(was_training)
        if dist.is_initialized():
            dist.all_reduce(total)
        if not total[1]:
            raise UserError(f"{self.job.stage}: train.init_gate found no supervised tokens in the first training rows")
        return float(total[0] / total[1]), min(world * per_rank, len(self.train_data))

    def judge(self, loss: float, where: str, state) -> None:
        self.judged = True
        random_loss = math.log(self.vocab_size)
        passed = math.isfinite(loss) and loss <= self.spec.max_loss and loss < random_loss
        init = self.job.init.spec if self.job.init else "scratch"
        verdict = (
            f"step-0 loss {loss:.3f} of the init {init} on {where}: at most train.init_gate.max_loss "
            f"{self.spec.max_loss:g} and below a random init's ln({self.vocab_size}) = {random_loss:.3f}"
        )
        message = (
            f"{self.job.stage}: init gate refused the run: step-0 loss {loss:.3f} of the init {init} on {where} "
            f"is not at most train.init_gate.max_loss {self.spec.max_loss:g} and below a random init's "
            f"ln({self.vocab_size}) = {random_loss:.3f}: the weights most likely did not load (or fit another "
            f"tokenizer); raise max_loss only if this model is known to start there"
        )
        if state.is_world_process_zero:
            self.store.write_json(
                layout.init_gate(self.job.run_prefix),
                {
                    "loss": loss,
                    "measured_on": where,
                    "max_loss": self.spec.max_loss,
                    "random_init_loss": random_loss,
                    "passed": passed,
                    "attempt": self.job.attempt,
                    "message": None if passed else message,
                },
            )
            log(f"[{self.job.stage}] init gate: {verdict}: {'passed' if passed else 'refused'}")
        if not passed:
            _barrier()  # the record is written before any rank fails the group (a restart refuses from it)
            raise UserError(message)


class MergedLoRACallback(TrainerCallback):
    """A LoRA checkpoint holds the merged full model (config.json + model.safetensors) at its root,
    which is what the sweep scores and promotion publishes, and the adapter under `adapter/`.

    The merge runs on CPU from the init's weights plus the saved adapter (PEFT's own
    `merge_and_unload`), so the training copy on the device is never touched. The adapter moves
    out of the root because transformers' `from_pretrained` attaches any adapter_config.json it
    finds there, which would apply the adapter a second time on top of the merged weights.
    (Resume does not read it: DeepSpeed's own files hold the trained state.)
    """

    def __init__(self, init_ref: ModelRef, trust_remote_code: bool):
        self.init_ref = init_ref
        self.trust_remote_code = trust_remote_code

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from peft import PeftModel

            checkpoint = Path(args.output_dir) / layout.checkpoint_name(state.global_step)
            base = load_model(self.init_ref.materialize(), self.trust_remote_code)
            merged = PeftModel.from_pretrained(base, checkpoint).merge_and_unload()
            adapter = checkpoint / "adapter"
            adapter.mkdir(exist_ok=True)
            for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
                if (checkpoint / name).exists():
                    (checkpoint / name).rename(adapter / name)
            merged.save_pretrained(checkpoint, safe_serialization=True)


class EMACallback(TrainerCallback):
    """An exponential moving average of the weights (`train.ema`), written into every checkpoint as
    `ema/`, a complete HF model the sweep can score.

    Kept in fp32 on the CPU of global rank 0 only: ZeRO-2 partitions gradients and optimizer state but
    every rank holds the full parameters after each step, so rank 0 reads them without a gather (ZeRO-3
    would need one; the recipe refuses ema there). Updated after every optimizer step. A resumed run
    reads it back from the checkpoint it resumes, so an interrupted run ends on the same average.
    The HF Trainer has no EMA of its own (timm's ModelEmaV3 and torch's AveragedModel wrap the module,
    which DeepSpeed's engine owns), hence this small one."""

    def __init__(self, decay: float, tokenizer, resume_dir: Path | None):
        self.decay = decay
        self.tokenizer = tokenizer
        self.resume_dir = resume_dir
        self.shadow: dict[int, torch.Tensor] = {}  # id(parameter) → its average: tied weights share one
        self.names: list[tuple[str, torch.nn.Parameter]] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        self.names = list(model.named_parameters(remove_duplicate=False))
        stored = self.resume_dir / "ema" / "model.safetensors" if self.resume_dir else None
        saved = {}
        if stored is not None:
            if not stored.is_file():
                raise RuntimeError(f"{stored}: train.ema is on but the checkpoint it resumes has no ema/ weights")
            from safetensors.torch import load_file

            saved = load_file(stored)
        for name, p in self.names:  # a tied alias may be missing from the file: its twin carries it
            if name in saved or (id(p) not in self.shadow and not saved):
                self.shadow[id(p)] = (saved[name] if saved else p.detach()).to("cpu", torch.float32).clone()
        absent = sorted({n for n, p in self.names if id(p) not in self.shadow})
        if absent:
            raise RuntimeError(f"{stored}: the averaged weights lack {', '.join(absent[:3])}")

    def on_step_end(self, args, state, control, **kwargs):
        if not self.shadow:
            return
        with torch.no_grad():
            done = set()
            for _, p in self.names:
                if id(p) in done:
                    continue
                done.add(id(p))
                self.shadow[id(p)].mul_(self.decay).add_(p.detach().to("cpu", torch.float32), alpha=1 - self.decay)

    def on_save(self, args, state, control, model=None, **kwargs):
        if not self.shadow:
            return
        out = Path(args.output_dir) / layout.checkpoint_name(state.global_step) / "ema"
        dtype = next(model.parameters()).dtype
        # tied parameters (one tensor under two names) stay one tensor, which save_pretrained de-duplicates
        tensors = {key: average.to(dtype) for key, average in self.shadow.items()}
        weights = {name: tensors[id(p)] for name, p in self.names}
        state_dict = {**{k: v for k, v in model.state_dict().items() if k not in weights}, **weights}
        model.save_pretrained(out, state_dict=state_dict, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        (out / "ema.json").write_text(f'{{"decay": {self.decay}, "step": {state.global_step}}}\n')


class StoreCheckpointCallback(TrainerCallback):
    """After the Trainer writes checkpoint-N locally, persist it to the store as a complete tree.

    Each node's local rank 0 uploads what its node wrote (HF weights, tokenizer, DeepSpeed optimizer
    shards, RNG states, trainer state) and then records its file list under `_uploads/` beside the
    checkpoints; global rank 0 waits for every node's list and writes the completion marker with all
    of them, last. A job killed mid-upload leaves a tree without a marker, which nothing reads. Then
    rank 0 uploads the run's logs so far (live curves on S3; a lost box keeps its log up to its last
    checkpoint) and prunes DeepSpeed's resume state from checkpoints older than the newest
    `keep_resume_states` (slm/checkpoints.py).

    With `background` (the default) all of that runs in a thread while training goes on: the local
    write is the only pause. At most one upload is in flight (the next save waits for it, and the
    Trainer's local rotation keeps the two newest checkpoints, so the one being uploaded stays on
    disk); a failed upload fails the run at the next step, save or the end of training; the end of
    training waits for the last one. The thread never joins a collective (the marker is coordinated
    through the store), so it cannot interleave with the training's own all-reduces. Neither the HF
    Trainer nor Ray Train uploads in the background (ray-project/ray #48801), hence this.
    """

    POLL_S = 0.2
    WAIT_FOR_NODES_S = 3600  # another node's upload that never lands: that node is gone

    def __init__(
        self,
        store: Store,
        run_prefix: str,
        local_rank: int,
        work: Path,
        keep_resume_states: int = 1,
        background: bool = True,
    ):
        self.store = store  # the worker's own: one client for every save
        self.run_prefix = run_prefix
        self.local_rank = local_rank
        self.work = work
        self.keep_resume_states = max(keep_resume_states, 1)  # the newest is what a resume starts from
        self.background = background
        self.step_ended = None
        self.uploaders = [0]  # the global ranks that upload: each node's local rank 0
        self.thread: threading.Thread | None = None
        self.failure: tuple[str, BaseException] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if dist.is_initialized():
            flags = [None] * dist.get_world_size()
            dist.all_gather_object(flags, self.local_rank == 0)
            self.uploaders = [rank for rank, uploads in enumerate(flags) if uploads]

    def on_step_end(self, args, state, control, **kwargs):
        self.raise_if_failed()
        self.step_ended = time.perf_counter()  # the Trainer logs, evaluates, then saves, then calls on_save

    def on_save(self, args, state, control, **kwargs):
        save_s = time.perf_counter() - self.step_ended if self.step_ended else None
        t0 = time.perf_counter()
        self.wait()  # the previous upload first: at most one in flight
        waited_s = time.perf_counter() - t0
        _barrier()  # every rank of this node has written its files
        local = Path(args.output_dir) / layout.checkpoint_name(state.global_step)
        key = layout.checkpoint_dir(self.run_prefix, state.global_step)
        loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
        meta = {
            "step": state.global_step,
            "loss": loss,
            "save_s": round(save_s, 3) if save_s is not None else None,
            "waited_s": round(waited_s, 3),
            "background": self.background,
        }
        rank = dist.get_rank() if dist.is_initialized() else 0
        if not self.background:
            self.persist(local, key, meta, rank)
            _barrier()
            return
        self.thread = threading.Thread(
            target=self._persist_in_background, args=(local, key, meta, rank), name=f"upload-{key}", daemon=True
        )
        self.thread.start()

    def on_train_end(self, args, state, control, **kwargs):
        self.wait()
        _barrier()

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            key, exc = self.failure
            raise RuntimeError(f"checkpoint upload to {self.store.url(key)} failed: {exc}") from exc

    def _persist_in_background(self, local: Path, key: str, meta: dict, rank: int) -> None:
        lower_this_threads_priority(UPLOAD_NICE)
        try:
            self.persist(local, key, meta, rank)
        except BaseException as exc:  # handed to the training thread, which fails the run
            self.failure = (key, exc)

    def persist(self, local: Path, key: str, meta: dict, rank: int) -> None:
        store = self.store
        uploads = layout.checkpoint_uploads(self.run_prefix, meta["step"])
        t0 = time.perf_counter()
        if self.local_rank == 0:
            files = store.upload_files(local, key, summary=False)
            store.write_json(f"{uploads}/rank-{rank}.json", {"files": files, "upload_s": time.perf_counter() - t0})
        if rank != 0:
            return
        merged, upload_s = {}, 0.0
        for other in self.uploaders:
            part = self._wait_for_part(f"{uploads}/rank-{other}.json", key)
            merged.update(part["files"])
            upload_s = max(upload_s, part["upload_s"])
        store.mark_complete(key, merged, {**meta, "upload_s": round(upload_s, 3)})
        store.delete_prefix(uploads)
        size = sum(f["size"] for f in merged.values())
        how = "in the background" if self.background else "before training went on"
        log(
            f"[checkpoint] {store.url(key)} persisted ({len(merged)} files, {size / 1e6:,.1f} MB, saved in "
            f"{meta['save_s'] or 0:.1f}s, uploaded {how} in {upload_s:.1f}s, "
            f"{size / 1e6 / max(upload_s, 1e-9):,.0f} MB/s)"
        )
        upload_logs(store, self.work, self.run_prefix)
        for entry in prune_resume_state(store, self.run_prefix, self.keep_resume_states):
            log(
                f"[checkpoint] optimizer state pruned from {entry['checkpoint'].rsplit('/', 1)[-1]} "
                f"({entry['bytes'] / 1e6:,.1f} MB)"
            )

    def _wait_for_part(self, part: str, key: str) -> dict:
        deadline = time.monotonic() + self.WAIT_FOR_NODES_S
        while not self.store.exists(part):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no node upload record {part} after {self.WAIT_FOR_NODES_S}s for {key}")
            time.sleep(self.POLL_S)
        return self.store.read_json(part)


# The background upload's nice value: it hashes and sends gigabytes while the training thread of the
# same process launches kernels (GPU) or computes (CPU); where the two want the same core, training wins.
UPLOAD_NICE = 10


def lower_this_threads_priority(nice: int) -> bool:
    """Raise the calling thread's nice value (Linux keeps one per thread, and threads it starts inherit
    it: boto3's transfer threads too); True when it took effect. Elsewhere setpriority on a thread id
    would renice the whole process, so nothing is done."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
    except OSError:
        return False
    return True


def upload_logs(store: Store, work: Path, run: str) -> None:
    """The progress CSV and TensorBoard event files of this run so far, to `<run>/train/`."""
    if (work / "train_log.csv").exists():
        store.upload_file(work / "train_log.csv", layout.train_log_csv(run))
    for event_file in (work / "tensorboard").rglob("events.*"):
        store.upload_file(event_file, layout.tensorboard_event(run, event_file.name))
