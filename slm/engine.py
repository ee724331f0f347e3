"""The one training engine shared by every stage.

Ray Train starts N workers (gloo on CPU, NCCL on GPUs) and restarts them on failure
(`FailureConfig`). Inside each worker, the HF Trainer runs the model under DeepSpeed with the
stage's config from `ds_configs/` (ZeRO-2 by default). Checkpoints go to the store as complete
trees; a (re)started worker group resumes from the newest complete one, with optimizer,
scheduler, RNG and data position restored by the Trainer.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

from pydantic import BaseModel

from slm.config import TrainSpec, resolve_path
from slm.errors import UserError, find_user_error
from slm.store import Store, cache_dir


class TrainJob(BaseModel):
    """Everything a worker needs, resolved in the driver (JSON-able, so it crosses to Ray workers)."""

    stage: str
    run_id: str
    run_prefix: str
    store: str
    objective: str  # causal_lm | chat_sft
    init: dict | None  # a resolved model reference; None = from scratch
    architecture: dict | None
    tokenizer: dict  # a resolved reference to the tokenizer directory
    trust_remote_code: bool = False
    chat_template: str | None = None
    dataset: str
    eval_split: str | None
    max_length: int
    train: TrainSpec
    ds_config: dict
    workers: int
    use_gpu: bool
    cpus_per_worker: float = 1
    max_failures: int = 1
    attempt: int = 1  # how many times this run has been launched (1 = first launch; reruns resume)
    kl_anchor: dict | None = None  # KLAnchorSpec
    lora: dict | None = None  # LoRASpec
    logit_distill: dict | None = None  # LogitDistillSpec with `teacher` resolved to a model reference
    dpo: dict | None = None  # DPOSpec (the dpo stage)
    peak_tflops_per_worker: float | None = None
    wandb_project: str | None = None  # set when WANDB_API_KEY is in the driver's environment


def load_ds_config(path: str, use_gpu: bool) -> dict:
    file = resolve_path(path)
    if not file.is_file():
        raise UserError(f"deepspeed config not found: {file}")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{file}: not valid JSON ({exc})") from None
    if "zero_optimization" not in config:
        raise UserError(f"{file}: no zero_optimization section")
    if not use_gpu and config.get("optimizer", {}).get("type", "").lower() in ("adam", "adamw"):
        # On CPU, torch's AdamW avoids DeepSpeed's JIT build of FusedAdam/CPUAdam (minutes, once per machine).
        config["optimizer"].setdefault("params", {})["torch_adam"] = True
    return config


def latest_complete_checkpoint(store: Store, run_prefix: str) -> str | None:
    steps = []
    for name in store.children(f"{run_prefix}/checkpoints"):
        key = f"{run_prefix}/checkpoints/{name}"
        if name.startswith("checkpoint-") and name.split("-")[-1].isdigit() and store.is_complete(key):
            steps.append((int(name.split("-")[-1]), key))
    return max(steps)[1] if steps else None


def _prepare_dataset(job: TrainJob, tokenizer, split: str):
    """Token ids and labels in memory: small per-rank work, and no closure hashing by `datasets`."""
    from datasets import Dataset

    from slm.chat import IGNORE_INDEX, encode_chat
    from slm.datasets import load_split

    data = load_split(Store.open(job.store), job.dataset, split)
    if job.objective == "dpo":  # TRL tokenizes preference pairs itself (chat template, prompt/completion masks)
        missing = {"prompt", "chosen", "rejected"} - set(data.column_names)
        if missing:
            raise UserError(f"dataset {job.dataset}: a dpo stage needs {', '.join(sorted(missing))} columns")
        return data.select_columns(["prompt", "chosen", "rejected"])
    if job.objective == "causal_lm":
        if "input_ids" not in data.column_names:
            raise UserError(f"dataset {job.dataset}: a causal_lm stage needs packed `input_ids` blocks")
        blocks = [ids[: job.max_length] for ids in data["input_ids"]]
        return Dataset.from_dict({"input_ids": blocks, "labels": blocks})
    if "messages" not in data.column_names:
        raise UserError(f"dataset {job.dataset}: a chat stage needs a `messages` column")
    encoded = [encode_chat(tokenizer, messages, job.max_length) for messages in data["messages"]]
    kept = Dataset.from_list([e for e in encoded if any(label != IGNORE_INDEX for label in e["labels"])])
    if len(kept) == 0:
        raise UserError(f"dataset {job.dataset} ({split}): no example keeps an assistant token "
                        f"within max_length {job.max_length}")
    return kept


def _build_model(job: TrainJob, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    from slm.modeling import load_model, materialize, scratch_config

    torch.manual_seed(job.train.seed)
    if job.init is None:
        return AutoModelForCausalLM.from_config(scratch_config(job.architecture, tokenizer, job.max_length))
    return load_model(materialize(job.init), job.trust_remote_code)


def _apply_lora(job: TrainJob, model):
    from peft import LoraConfig, get_peft_model

    spec = job.lora
    config = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                        target_modules=spec["target_modules"], task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _kl_terms(job: TrainJob) -> list:
    from slm.modeling import load_model, materialize
    from slm.objectives import KLTerm

    terms = []
    if job.kl_anchor:
        a = job.kl_anchor
        terms.append(KLTerm("kl", load_model(materialize(job.init), job.trust_remote_code), a["coef"],
                            a["start_step"], a["warmup_steps"], a["last_k_tokens"]))
    if job.logit_distill:
        d = job.logit_distill
        terms.append(KLTerm("distill_kl", load_model(materialize(d["teacher"]), job.trust_remote_code), d["alpha"],
                            temperature=d["temperature"], ce_weight=1.0 - d["alpha"]))
    return terms


def _progress_callback(job: TrainJob, model_config, parameters: int, device, csv_path: Path):
    from slm.callbacks import ProgressCallback
    from slm.mfu import flops_per_token, model_dims, peak_tflops

    layers, width = model_dims(model_config)
    per_token = flops_per_token(parameters, layers, width, job.max_length)
    peak = job.peak_tflops_per_worker
    if peak is None and device.type == "cuda":
        import torch

        peak = peak_tflops(torch.cuda.get_device_name(device), job.train.precision)
    return ProgressCallback(job.stage, csv_path, per_token, peak * job.workers if peak else None)


def _training_arguments(job: TrainJob, output_dir: Path):
    from transformers import TrainingArguments

    t = job.train
    if job.objective == "dpo":
        from functools import partial

        from trl import DPOConfig

        arguments = partial(DPOConfig, beta=job.dpo["beta"], loss_type=[job.dpo["loss_type"]], max_length=job.max_length)
    else:
        arguments = TrainingArguments
    return arguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.micro_batch,
        per_device_eval_batch_size=t.micro_batch,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.schedule,
        warmup_steps=t.warmup_steps,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16",
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,  # local disk only; every checkpoint is kept in the store
        eval_strategy="steps" if job.eval_split else "no",
        eval_steps=t.save_steps if job.eval_split else None,
        deepspeed=job.ds_config,
        use_cpu=not job.use_gpu,
        ddp_backend=None if job.use_gpu else "gloo",
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
        report_to=["tensorboard"] + (["wandb"] if job.wandb_project else []),
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )


def _worker_loop(job_dict: dict) -> None:
    """Runs in every Ray Train worker."""
    import deepspeed
    import torch
    import torch.distributed as dist
    from transformers import DataCollatorForSeq2Seq
    from transformers.trainer_callback import PrinterCallback

    from slm.callbacks import MergedLoRACallback, SaveLastStepCallback, StoreCheckpointCallback
    from slm.objectives import StageTrainer
    from slm.init_checks import check_tied
    from slm.modeling import load_tokenizer, materialize

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    job = TrainJob.model_validate(job_dict)
    if not job.use_gpu:  # one intra-op thread per CPU given to the worker: two workers on two cores don't fight
        torch.set_num_threads(max(1, int(job.cpus_per_worker)))
    rank, local_rank = dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0))
    store = Store.open(job.store)
    work = cache_dir() / "runs" / job.run_id
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(work / "tensorboard")

    tokenizer = load_tokenizer(materialize(job.tokenizer), job.trust_remote_code, job.chat_template)
    model = _build_model(job, tokenizer)
    tied = check_tied(model, f"{job.stage} model")
    parameters = sum(p.numel() for p in model.parameters())
    if job.lora:
        model = _apply_lora(job, model)
    train_data = _prepare_dataset(job, tokenizer, "train")
    eval_data = _prepare_dataset(job, tokenizer, job.eval_split) if job.eval_split else None

    resume_key = latest_complete_checkpoint(store, job.run_prefix)
    resume_dir = None
    if resume_key:
        from slm.store import fetch_tree_cached

        resume_dir = fetch_tree_cached(store, resume_key)
        if rank == 0:
            print(f"[{job.stage}] resuming from {store.url(resume_key)}", file=sys.stderr, flush=True)
    if rank == 0:  # one event per worker-group start: a Ray Train restart or a rerun after the job died
        import datetime as dt

        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        store.write_json(f"{job.run_prefix}/train/starts/{stamp}.json",
                         {"attempt": job.attempt, "started_at": stamp, "resume_from": resume_key,
                          "world_size": dist.get_world_size()})

    args = _training_arguments(job, work / "trainer")
    callbacks = [_progress_callback(job, model.config, parameters, args.device, work / "train_log.csv"),
                 SaveLastStepCallback()]
    if job.lora:  # before the upload, so the merged full weights go to the store with the adapter
        callbacks.append(MergedLoRACallback(job.init, job.trust_remote_code))
    callbacks.append(StoreCheckpointCallback(job.store, job.run_prefix, local_rank))
    if job.objective == "dpo":
        from trl import DPOTrainer

        from slm.modeling import load_model

        # The frozen reference is the starting model, loaded like any model (safetensors only); with
        # LoRA, TRL uses the base with the adapter disabled instead.
        reference = None if job.lora else load_model(materialize(job.init), job.trust_remote_code)
        # TRL tokenizes with datasets.map, whose fingerprinting disassembles the map function through
        # dill; under Ray's stdout forwarding that bytecode dump lands in the job log. Keep it out.
        with contextlib.redirect_stdout(io.StringIO()):
            trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=train_data,
                                 eval_dataset=eval_data, processing_class=tokenizer, callbacks=callbacks)
    else:
        trainer = StageTrainer(
            model=model,
            args=args,
            train_dataset=train_data,
            eval_dataset=eval_data,
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
            processing_class=tokenizer,
            callbacks=callbacks,
            kl_terms=_kl_terms(job),
        )
    trainer.remove_callback(PrinterCallback)  # its raw log dicts repeat what ProgressCallback prints
    trainer.train(resume_from_checkpoint=str(resume_dir) if resume_dir else None)

    engine = trainer.model_wrapped
    facts = {
        "engine": type(engine).__name__,
        "zero_stage": engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None,
        "world_size": dist.get_world_size(),
        "backend": dist.get_backend(),
        "deepspeed": deepspeed.__version__,
        "device": str(trainer.args.device),
        "parameters": parameters,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "lora": job.lora,
        "train_rows": len(train_data),
        "global_step": trainer.state.global_step,
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "resumed_from": resume_key,
        "torch_threads": torch.get_num_threads(),
        "tied_embeddings": tied and check_tied(model, f"{job.stage} trained model"),
    }
    if rank == 0:
        history_key = f"{job.run_prefix}/train"
        store.write_json(f"{history_key}/engine.json", facts)
        store.write_json(f"{history_key}/log_history.json", trainer.state.log_history)
        if (work / "train_log.csv").exists():
            store.upload_file(work / "train_log.csv", f"{history_key}/train_log.csv")
        for event_file in (work / "tensorboard").rglob("events.*"):
            store.upload_file(event_file, f"{history_key}/tensorboard/{event_file.name}")
    dist.barrier()
    if local_rank == 0:
        shutil.rmtree(work / "trainer", ignore_errors=True)


def run(job: TrainJob) -> None:
    """Train on a Ray Train worker group; raises UserError with the worker's message on failure."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=job.model_dump(mode="json"),
        scaling_config=ScalingConfig(num_workers=job.workers, use_gpu=job.use_gpu,
                                     resources_per_worker={"CPU": job.cpus_per_worker}),
        run_config=RunConfig(name=job.run_id, storage_path=str(cache_dir() / "ray_results"),
                             failure_config=FailureConfig(max_failures=job.max_failures)),
    )
    try:
        trainer.fit()
    except Exception as exc:  # Ray wraps worker errors; surface the user's one-line message if there is one
        user_error = find_user_error(exc)
        if user_error is not None:
            raise user_error from None
        raise
