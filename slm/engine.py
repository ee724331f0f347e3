"""The one training engine shared by every stage.

Ray Train starts N workers (gloo on CPU, NCCL on GPUs) and restarts them on failure
(`FailureConfig`). Inside each worker, the HF Trainer runs the model under DeepSpeed with the
stage's config from `ds_configs/` (ZeRO-2 by default). Checkpoints go to the store as complete
trees; a (re)started worker group resumes from the newest complete one, with optimizer,
scheduler, RNG and data position restored by the Trainer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from slm import layout
from slm.config import DPOSpec, KLAnchorSpec, LoRASpec, TrainSpec
from slm.errors import UserError, find_user_error, require_extra
from slm.init_checks import check_tied
from slm.log import log
from slm.mfu import flops_per_token, model_dims, peak_tflops
from slm.modeling import load_model, load_tokenizer, scratch_config
from slm.packing import packing_stats
from slm.padding import PadPlan, apply_pad, fit_model_to_pad
from slm.refs import ModelRef
from slm.store import Store, cache_dir, fetch_tree_cached

# torch, transformers, deepspeed, peft, ray (and slm.callbacks, which is built on torch and transformers)
# are imported inside the functions that run in the workers or launch them: the driver imports this
# module to plan a job and should not pay for them.


class LogitDistillPlan(BaseModel):
    """LogitDistillSpec with its teacher resolved (stages/distill.py)."""

    model_config = ConfigDict(extra="forbid")

    teacher: ModelRef
    temperature: float
    alpha: float


class TrainJob(BaseModel):
    """Everything a worker needs, resolved in the driver (JSON-able, so it crosses to Ray workers)."""

    stage: str
    recipe: str  # the recipe module that planned the job (stages/<name>.py), for records and logs
    run_id: str
    run_prefix: str
    store: str
    init: ModelRef | None  # None = from scratch
    architecture: dict | None
    tokenizer: ModelRef
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
    placement: str = "PACK"  # cluster.placement
    env: dict[str, str] = {}  # cluster.env
    store_shared: bool = False  # cluster.store_shared
    max_failures: int = 1
    attempt: int = 1  # how many times this run has been launched (1 = first launch; reruns resume)
    kl_anchor: KLAnchorSpec | None = None
    lora: LoRASpec | None = None
    logit_distill: LogitDistillPlan | None = None
    dpo: DPOSpec | None = None  # the dpo stage
    peak_tflops_per_worker: float | None = None
    wandb_project: str | None = None  # set when WANDB_API_KEY is in the driver's environment
    warnings: list[str] = []  # what the recipe's plan found worth telling (goes to the run record)
    pad: PadPlan | None = None  # chat stages: the pad token plan (slm/padding.py), applied in every worker
    keep_optimizer_states: int = 1  # PipelineConfig.keep_optimizer_states (slm/checkpoints.py)
    background_upload: bool = True  # PipelineConfig.background_upload (slm/callbacks.py StoreCheckpointCallback)
    packing: bool = False  # train.packing as resolved for this model (slm/packing.py)


def optimizer_name(ds_config: dict, optim: str | None = None) -> str:
    """The optimizer a run actually uses: the DeepSpeed config's, else train.optim or the HF Trainer's default."""
    optimizer = ds_config.get("optimizer")
    if not optimizer:
        return f"{optim} (HF Trainer, train.optim)" if optim else "AdamW (HF Trainer default, torch)"
    params = optimizer.get("params", {})
    where = " with torch's implementation" if params.get("torch_adam") else ""
    offload = (ds_config.get("zero_optimization", {}).get("offload_optimizer") or {}).get("device")
    offloaded = f", offloaded to {offload}" if offload and offload != "none" else ""
    return f"{optimizer.get('type')} (DeepSpeed{where}{offloaded})"


# The one mapping of the pipeline's keys to TrainingArguments: field → (the config key that owns it,
# its value for a job). training_arguments() is built from it and train.extra may set none of its fields.
TRAINING_ARGUMENTS = {
    "output_dir": ("the run's directory", lambda job, out: str(out)),
    "per_device_train_batch_size": ("train.micro_batch", lambda job, out: job.train.micro_batch),
    "per_device_eval_batch_size": ("train.micro_batch", lambda job, out: job.train.micro_batch),
    "gradient_accumulation_steps": ("train.grad_accum", lambda job, out: job.train.grad_accum),
    "learning_rate": ("train.lr", lambda job, out: job.train.lr),
    "lr_scheduler_type": ("train.schedule", lambda job, out: job.train.schedule),
    # transformers 5: a float below 1 is a ratio of the run
    "warmup_steps": (
        "train.warmup_steps / train.warmup_ratio",
        lambda job, out: job.train.warmup_ratio or job.train.warmup_steps,
    ),
    "activation_checkpointing": ("train.gradient_checkpointing", lambda job, out: job.train.gradient_checkpointing),
    "num_train_epochs": ("train.epochs", lambda job, out: job.train.epochs),
    "max_steps": ("train.max_steps", lambda job, out: job.train.max_steps),
    "weight_decay": ("train.weight_decay", lambda job, out: job.train.weight_decay),
    "max_grad_norm": ("train.max_grad_norm", lambda job, out: job.train.max_grad_norm),
    "seed": ("train.seed", lambda job, out: job.train.seed),
    "data_seed": ("train.seed", lambda job, out: job.train.seed),
    "bf16": ("train.precision", lambda job, out: job.train.precision == "bf16"),
    "fp16": ("train.precision", lambda job, out: job.train.precision == "fp16"),
    "logging_steps": ("train.logging_steps", lambda job, out: job.train.logging_steps),
    "save_strategy": ("train.save_steps", lambda job, out: "steps"),
    "save_steps": ("train.save_steps", lambda job, out: job.train.save_steps),
    # local disk only; every checkpoint is kept in the store
    "save_total_limit": ("the engine", lambda job, out: 2),
    "eval_strategy": ("data.eval_split", lambda job, out: "steps" if job.eval_split else "no"),
    "eval_steps": ("train.save_steps", lambda job, out: job.train.save_steps if job.eval_split else None),
    # the validation loss at step 0 too: the curve's first point, and what the init gate reads
    "eval_on_start": ("data.eval_split", lambda job, out: bool(job.eval_split)),
    "metric_for_best_model": (
        "train.early_stopping",
        lambda job, out: job.train.early_stopping.metric if job.train.early_stopping else None,
    ),
    "greater_is_better": ("train.early_stopping", lambda job, out: False if job.train.early_stopping else None),
    # the patience counter is saved in each checkpoint's trainer_state.json; a resume must read it back
    "restore_callback_states_from_checkpoint": (
        "train.early_stopping",
        lambda job, out: bool(job.train.early_stopping),
    ),
    "deepspeed": ("the stage's deepspeed", lambda job, out: job.ds_config),
    "use_cpu": ("cluster.use_gpu", lambda job, out: not job.use_gpu),
    "ddp_backend": ("cluster.use_gpu", lambda job, out: None if job.use_gpu else "gloo"),
    "include_num_input_tokens_seen": ("the engine", lambda job, out: "non_padding"),
    "disable_tqdm": ("the engine", lambda job, out: True),
    # the Trainer sets transformers' verbosity per rank from these (replicas: warning)
    "log_level": ("the engine", lambda job, out: "error"),
    "log_level_replica": ("the engine", lambda job, out: "error"),
    "report_to": (
        "the engine (tensorboard; wandb with WANDB_API_KEY)",
        lambda job, out: ["tensorboard"] + (["wandb"] if job.wandb_project else []),
    ),
    "dataloader_num_workers": ("the engine", lambda job, out: 0),
    "remove_unused_columns": ("the engine", lambda job, out: False),
}
# Fields train.extra may not set: the table's, train.optim's, and the spellings of a typed key the table
# sets another way (warmup_ratio goes into warmup_steps; gradient_checkpointing is activation_checkpointing).
MANAGED_ARGUMENTS = {
    **{field: owner for field, (owner, _) in TRAINING_ARGUMENTS.items()},
    "optim": "train.optim",
    "warmup_ratio": "train.warmup_ratio",
    "gradient_checkpointing": "train.gradient_checkpointing",
}


def training_arguments(job: TrainJob, output_dir: Path) -> dict:
    """The TrainingArguments every stage shares; a recipe builds its arguments class from them."""
    t = job.train
    return {
        **{field: value(job, output_dir) for field, (_, value) in TRAINING_ARGUMENTS.items()},
        **({"optim": t.optim} if t.optim else {}),
        **t.extra,
    }


# TrainingArguments fields the engine owns outright: a value in train.extra would fight it, not tune it.
ENGINE_OWNED = {
    "fsdp": "this pipeline trains with DeepSpeed (the stage's deepspeed: config); FSDP beside it is refused",
    "fsdp_config": "this pipeline trains with DeepSpeed (the stage's deepspeed: config); FSDP beside it is refused",
    "deepspeed": "set the stage's deepspeed: config instead",
    "resume_from_checkpoint": "resuming is the engine's: a re-run of the same stage resumes its newest checkpoint",
    "output_dir": "the engine writes checkpoints to the run's directory in the store",
    "use_cpu": "follows cluster.use_gpu",
}


def check_runnable(t: TrainSpec, use_gpu: bool, where: str) -> None:
    """What needs a GPU, refused on CPU workers (one line here instead of a kernel error in a worker)."""
    if t.loss == "liger":
        require_extra("liger_kernel", "liger", f"{where}: train.loss liger")
    if use_gpu:
        return
    if t.loss == "liger":
        raise UserError(f"{where}: train.loss liger is a GPU kernel and needs GPU workers; on CPU use chunked")
    if t.precision in ("fp16", "bf16"):
        raise UserError(f"{where}: train.precision {t.precision} needs GPU workers (cluster.use_gpu); CPU trains fp32")
    if t.attn_implementation and t.attn_implementation.startswith("flash_attention"):
        raise UserError(
            f"{where}: train.attn_implementation {t.attn_implementation} needs GPU workers (cluster.use_gpu)"
        )


def check_train_extra(t: TrainSpec, where: str) -> None:
    """train.optim and train.extra, by TrainingArguments itself, in the driver: a field the pipeline
    already sets is refused (one meaning per knob), an unknown field or a bad value is one line."""
    import dataclasses
    import tempfile

    from transformers import TrainingArguments
    from transformers.training_args import OptimizerNames

    if t.optim and t.optim not in {o.value for o in OptimizerNames}:
        raise UserError(
            f"{where}: train.optim {t.optim!r} is not an HF Trainer optimizer "
            f"(e.g. {', '.join(o.value for o in list(OptimizerNames)[:4])}, ...)"
        )
    fields = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    for key in t.extra:
        if key in ENGINE_OWNED:
            raise UserError(f"{where}: train.extra.{key}: {ENGINE_OWNED[key]}")
        if key in MANAGED_ARGUMENTS:
            raise UserError(
                f"{where}: train.extra.{key} is set by the pipeline ({MANAGED_ARGUMENTS[key]}); use that key"
            )
        if key not in fields:
            raise UserError(f"{where}: train.extra.{key} is not a TrainingArguments field")
    if not t.extra:
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            TrainingArguments(output_dir=tmp, use_cpu=True, report_to=[], **t.extra)
        except (ValueError, TypeError, ImportError) as exc:
            raise UserError(
                f"{where}: train.extra: TrainingArguments refuses it: {str(exc).splitlines()[0][:300]}"
            ) from None


def _build_model(job: TrainJob, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(job.train.seed)
    if job.init is None:
        attn = {"attn_implementation": job.train.attn_implementation} if job.train.attn_implementation else {}
        return AutoModelForCausalLM.from_config(scratch_config(job.architecture, tokenizer, job.max_length), **attn)
    return load_model(job.init.materialize(), job.trust_remote_code, attn_implementation=job.train.attn_implementation)


def _apply_lora(job: TrainJob, model):
    from peft import LoraConfig, get_peft_model

    spec = job.lora
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _progress_callback(job: TrainJob, model_config, parameters: int, device, csv_path: Path):
    from slm.callbacks import ProgressCallback

    layers, width = model_dims(model_config)
    per_token = flops_per_token(parameters, layers, width, job.max_length)
    peak = job.peak_tflops_per_worker
    if peak is None and device.type == "cuda":
        import torch

        peak = peak_tflops(torch.cuda.get_device_name(device), job.train.precision)
    return ProgressCallback(job.stage, csv_path, per_token, peak * job.workers if peak else None)


def _worker_loop(job_dict: dict, recipe) -> None:
    """Runs in every Ray Train worker: the recipe turns rows into examples and builds the trainer."""
    import warnings

    job = TrainJob.model_validate(job_dict)
    if not job.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # said, so DeepSpeed does not warn that it found no GPU
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecations, once per rank and stage
    import deepspeed
    import torch
    import torch.distributed as dist
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    from slm.callbacks import (
        EMACallback,
        InitGateCallback,
        MergedLoRACallback,
        SaveLastStepCallback,
        StoreCheckpointCallback,
        upload_logs,
    )

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()  # the examples' one-time map per node is not worth a bar per rank
    datasets.logging.set_verbosity_error()
    if not job.use_gpu:  # one intra-op thread per CPU given to the worker: two workers on two cores don't fight
        torch.set_num_threads(max(1, int(job.cpus_per_worker)))
    rank, local_rank = dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0))
    store = Store.open(job.store)
    work = cache_dir() / "runs" / job.run_id
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(work / "tensorboard")

    tokenizer = load_tokenizer(job.tokenizer.materialize(), job.trust_remote_code, job.chat_template)
    apply_pad(tokenizer, job.pad)
    model = fit_model_to_pad(_build_model(job, tokenizer), job.pad)
    tied = check_tied(model, f"{job.stage} model")
    parameters = sum(p.numel() for p in model.parameters())
    if job.lora:
        model = _apply_lora(job, model)
    train_data = recipe.examples(job, tokenizer, "train")
    eval_data = recipe.examples(job, tokenizer, job.eval_split) if job.eval_split else None
    packing = packing_stats(train_data, job.max_length) if job.packing else None
    if packing and rank == 0:  # every stage that packs (chat and pretraining), said once
        log(
            f"[{job.stage}] train: {packing['examples']:,} examples packed into {packing['rows']:,} rows of "
            f"{job.max_length} tokens ({packing['fill']:.1%} full)"
        )

    resume_key = layout.latest_checkpoint(store, job.run_prefix)
    resume_dir = None
    if resume_key:
        resume_dir = fetch_tree_cached(store, resume_key)
        if rank == 0:
            log(f"[{job.stage}] resuming from {store.url(resume_key)}")
    if rank == 0:  # one event per worker-group start: a Ray Train restart or a rerun after the job died
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        store.write_json(
            layout.worker_start(job.run_prefix, stamp),
            {
                "attempt": job.attempt,
                "started_at": stamp,
                "resume_from": resume_key,
                "world_size": dist.get_world_size(),
            },
        )

    arguments = training_arguments(job, work / "trainer")
    device = torch.device("cuda", local_rank) if job.use_gpu else torch.device("cpu")
    callbacks = [
        _progress_callback(job, model.config, parameters, device, work / "train_log.csv"),
        SaveLastStepCallback(),
    ]
    if job.lora:  # before the upload, so the merged full weights go to the store with the adapter
        callbacks.append(MergedLoRACallback(job.init, job.trust_remote_code))
    if job.train.ema:  # before the upload too: each checkpoint carries its ema/ model
        callbacks.append(EMACallback(job.train.ema.decay, tokenizer, resume_dir))
    gate = None
    if job.train.init_gate and job.init is not None and job.dpo is None and resume_dir is None:
        # dpo's loss is a preference loss (ln 2 at step 0 by construction): nothing to compare with ln(vocab)
        gate = InitGateCallback(
            job.train.init_gate, job, store, train_data, eval_data is not None, model.config.vocab_size
        )
        gate.refuse_again()
        callbacks.append(gate)
    if job.train.early_stopping:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(job.train.early_stopping.patience, job.train.early_stopping.min_delta))
    callbacks.append(
        StoreCheckpointCallback(
            store,
            job.run_prefix,
            local_rank,
            work,
            keep_resume_states=max(job.keep_optimizer_states, 1),
            background=job.background_upload,
        )
    )
    # Libraries print the same setup lines on every rank (DeepSpeed's "built successfully"); rank 0's
    # copy is enough. Progress, checkpoints and errors go to stderr and are not affected.
    with contextlib.ExitStack() as quiet:
        if rank != 0:
            quiet.enter_context(contextlib.redirect_stdout(quiet.enter_context(open(os.devnull, "w"))))
        trainer = recipe.trainer(job, model, tokenizer, arguments, train_data, eval_data, callbacks)
        trainer.remove_callback(PrinterCallback)  # its raw log dicts repeat what ProgressCallback prints
        if gate is not None:
            gate.collator = trainer.data_collator
        trainer.train(resume_from_checkpoint=str(resume_dir) if resume_dir else None)

    engine = trainer.model_wrapped
    import ray

    nodes = [None] * dist.get_world_size()  # each rank's node address: where the workers were placed
    dist.all_gather_object(nodes, ray.util.get_node_ip_address())
    facts = {
        "engine": type(engine).__name__,
        "zero_stage": engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None,
        "world_size": dist.get_world_size(),
        "worker_nodes": nodes,
        "backend": dist.get_backend(),
        "deepspeed": deepspeed.__version__,
        "device": str(trainer.args.device),
        "parameters": parameters,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "lora": job.lora.model_dump() if job.lora else None,
        "train_rows": len(train_data),
        "packing": packing,
        "global_step": trainer.state.global_step,
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "resumed_from": resume_key,
        "torch_threads": torch.get_num_threads(),
        "niceness": os.nice(0),
        "tied_embeddings": tied and check_tied(model, f"{job.stage} trained model"),
        "planned_steps": trainer.state.max_steps,
        "device_name": torch.cuda.get_device_name(local_rank) if job.use_gpu else _cpu_name(),
        "stopped_early": _early_stop(job, trainer),
    }
    if rank == 0:
        store.write_json(layout.engine_facts(job.run_prefix), facts)
        store.write_json(layout.log_history(job.run_prefix), trainer.state.log_history)
        upload_logs(store, work, job.run_prefix)
    dist.barrier()
    if local_rank == 0:
        shutil.rmtree(work / "trainer", ignore_errors=True)


def _cpu_name() -> str:
    import platform

    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"CPU ({line.split(':', 1)[1].strip()})"
    except OSError:
        pass
    return f"CPU ({platform.processor() or platform.machine()})"


def _early_stop(job: TrainJob, trainer) -> dict | None:
    """Where HF's EarlyStoppingCallback stopped the run, for the record and the card (None: it ran out)."""
    from transformers import EarlyStoppingCallback

    spec = job.train.early_stopping
    stopper = next((c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)), None)
    if spec is None or stopper is None or stopper.early_stopping_patience_counter < spec.patience:
        return None
    state = trainer.state
    return {
        "step": state.global_step,
        "planned_steps": state.max_steps,
        "metric": spec.metric,
        "best": state.best_metric,
        "best_step": getattr(state, "best_global_step", None),
        "patience": spec.patience,
        "min_delta": spec.min_delta,
    }


def run(job: TrainJob, recipe) -> None:
    """Train `recipe` (a stage module following slm.recipe.Recipe) on a Ray Train worker group;
    raises UserError with the worker's message on failure."""
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from slm.cluster import WORK_ENV

    def train_loop(config: dict) -> None:  # the recipe module travels by reference (cloudpickle)
        _worker_loop(config, recipe)

    trainer = TorchTrainer(
        train_loop,
        train_loop_config=job.model_dump(mode="json"),
        scaling_config=ScalingConfig(
            num_workers=job.workers,
            use_gpu=job.use_gpu,
            resources_per_worker={"CPU": job.cpus_per_worker},
            placement_strategy=job.placement,
        ),
        run_config=RunConfig(
            name=job.run_id,
            storage_path=str(cache_dir() / "ray_results"),
            failure_config=FailureConfig(max_failures=job.max_failures),
            # Train's own INFO lines (resource requests, worker ranks) are not for users
            logging_config=LoggingConfig(log_level="WARNING"),
            worker_runtime_env={"env_vars": {**WORK_ENV, **job.env}},
        ),
    )
    check_store_reachable_from_every_node(job.store, job.store_shared)
    try:
        trainer.fit()
    except Exception as exc:  # Ray wraps worker errors; surface the user's one-line message if there is one
        user_error = find_user_error(exc)
        if user_error is not None:
            raise user_error from None
        raise


def check_store_reachable_from_every_node(store_uri: str, shared: bool) -> None:
    """A local-directory store is one node's disk: on a cluster of more than one node each node would
    checkpoint into a store of its own (and Ray Train requires shared storage for multi-node runs), so
    it is refused unless cluster.store_shared says the path is one shared filesystem."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if store_uri.startswith("s3://") or shared or len(nodes) <= 1:
        return
    raise UserError(
        f"store {store_uri} is a local directory and the cluster has {len(nodes)} nodes: each node would write "
        "a store of its own; use an s3:// store, or set cluster.store_shared: true if that path is one shared "
        "filesystem on every node"
    )
