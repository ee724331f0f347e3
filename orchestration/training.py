"""Training a stage: plan with its recipe, name the run, train (or resume, or skip), keep the record.

A run is named by its stage and a digest of everything that changes its result: the resolved stage
config, the starting weights, the dataset, the DeepSpeed config's contents, the tokenizer's and
chat template's contents, and the worker count. Re-running the same stage finds its own run: a
finished run is not trained again, an unfinished one resumes from its newest complete checkpoint.
"""

from __future__ import annotations

import json
import math

from slm import cluster, engine, layout, plots, records
from slm.chat import prompt_text
from slm.checkpoints import holds_resume_state, prune_resume_state, resumable
from slm.config import PipelineConfig, StageConfig, config_digest, resolve_path
from slm.datasets import Manifest, dataset_identity, read_manifest
from slm.engine import TrainJob
from slm.errors import UserError
from slm.eval.scores import Candidate
from slm.init_checks import init_loss_warning
from slm.log import log
from slm.modeling import load_tokenizer
from slm.recipe import StageContext
from slm.records import load_record
from slm.refs import SCRATCH, ModelRef, ScratchRef
from slm.run_record import (
    Attempt,
    EngineFacts,
    InitGateResult,
    ModelFacts,
    RunRecord,
    StorageSummary,
    TrainingSummary,
    WorkerGroupStart,
)
from slm.stages import RECIPES
from slm.store import Store, sha256_file


def model_facts(store: Store, checkpoint_key: str, parameters: int) -> ModelFacts:
    cfg = json.loads(store.read_bytes(layout.model_config(checkpoint_key)))
    pick = lambda *names: next((cfg[n] for n in names if n in cfg), None)  # noqa: E731
    return ModelFacts(
        architecture=cfg.get("model_type"),
        parameters=parameters,
        hidden_size=pick("hidden_size", "n_embd"),
        layers=pick("num_hidden_layers", "n_layer"),
        heads=pick("num_attention_heads", "n_head"),
        vocab_size=cfg.get("vocab_size"),
        context=pick("max_position_embeddings", "n_positions"),
        tie_word_embeddings=cfg.get("tie_word_embeddings", True),
    )


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def read_init_gate(store: Store, prefix: str) -> InitGateResult | None:
    key = layout.init_gate(prefix)
    return load_record(store, key, InitGateResult) if store.exists(key) else None


def training_summary(log_history: list[dict]) -> TrainingSummary:
    losses = [h["loss"] for h in log_history if "loss" in h]
    # one point per step (a resume's eval_on_start repeats the evaluation of the step it resumes at),
    # with the perplexity exp(loss) beside the loss
    by_step = {h["step"]: h["eval_loss"] for h in log_history if "eval_loss" in h}
    evals = [{"step": step, "eval_loss": loss, "perplexity": _perplexity(loss)} for step, loss in by_step.items()]
    final = next((h for h in reversed(log_history) if "train_runtime" in h), {})
    tokens, runtime = final.get("num_input_tokens_seen"), final.get("train_runtime")
    return TrainingSummary(
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        min_loss=min(losses) if losses else None,
        loss_fell=bool(losses) and losses[-1] < losses[0],
        eval=evals,
        train_runtime_s=runtime,
        tokens=tokens,
        tokens_per_s=tokens / runtime if tokens and runtime else None,
    )


def checkpoints(store: Store, run: str) -> list[Candidate]:
    """A run's complete checkpoints as sweep candidates, oldest first."""
    return [
        Candidate(name=key.rsplit("/", 1)[-1], key=key, kind="checkpoint", step=step)
        for step, key in layout.complete_checkpoints(store, run)
    ]


def files_identity(ref: ModelRef | None):
    """What a model or tokenizer reference holds (file checksums), not how it was named."""
    return SCRATCH if ref is None else ref.files_identity()


def run_identity(cfg: StageConfig, job: TrainJob, data_digest: str) -> dict:
    """Everything besides the stage config that changes what a run trains."""
    template = cfg.model.chat_template
    template_file = resolve_path(template) if template else None
    return {
        "init": files_identity(job.init),
        "tokenizer": "init" if job.tokenizer == job.init else files_identity(job.tokenizer),
        "chat_template": sha256_file(template_file) if template_file and template_file.is_file() else template,
        "deepspeed": job.ds_config,
        "data": data_digest,
    }


def refuse_other_world_size(store: Store, stage: str, resume_identity: str, workers: int) -> None:
    """An unfinished run of the same config on another worker count is not resumed: say so, don't restart silently.

    Its ZeRO optimizer state is partitioned per rank, and the Trainer skips already-seen batches
    per rank, so on a different world size the data position would replay or skip samples.
    """
    for run_id in store.children(layout.stage_runs(stage)):
        key = layout.run_record(layout.run_prefix(stage, run_id))
        if not store.exists(key):
            continue
        other = load_record(store, key, RunRecord)
        if other.resume_identity != resume_identity or other.status == "finished" or other.cluster.workers == workers:
            continue
        checkpoint = layout.latest_checkpoint(store, other.run_prefix)
        if checkpoint:
            zero = other.deepspeed.zero_stage
            raise UserError(
                f"{stage}: run {run_id} of this config stopped at {checkpoint.rsplit('/', 1)[-1]} on "
                f"{other.cluster.workers} workers; resuming it on {workers} is not supported (ZeRO-{zero} "
                f"optimizer shards are per rank and the data position depends on the world size). Rerun with "
                f"--set cluster.workers={other.cluster.workers} to resume it, or change the config "
                f"(e.g. train.seed) to start a new run on {workers} workers"
            )


def worker_group_starts(store: Store, prefix: str) -> list[WorkerGroupStart]:
    """Every start of the Ray Train worker group (first launch, FailureConfig restarts, reruns), oldest first."""
    starts = layout.worker_starts(prefix)
    return [load_record(store, layout.tree_file(starts, n), WorkerGroupStart) for n in sorted(store.children(starts))]


def new_record(
    pipeline: PipelineConfig,
    cfg: StageConfig,
    job: TrainJob,
    run_id: str,
    prefix: str,
    resume_identity: str,
    manifest: Manifest,
    data_digest: str,
) -> RunRecord:
    record = RunRecord(
        stage=cfg.stage,
        run_id=run_id,
        run_prefix=prefix,
        line=pipeline.line,
        recipe=job.recipe,
        resume_identity=resume_identity,
        experiment=cfg.experiment.model_dump() if cfg.experiment else None,
        config=cfg.model_dump(mode="json"),  # every field, defaults too: the record says what ran
        init=job.init or ScratchRef(),
        tokenizer=job.tokenizer,
        data=manifest,
        data_manifest_sha256=data_digest,
        deepspeed={
            "config_file": cfg.deepspeed,
            "config": job.ds_config,
            "zero_stage": job.ds_config["zero_optimization"]["stage"],
            "optimizer": engine.optimizer_name(job.ds_config, job.train.optim),
        },
        cluster=pipeline.cluster.model_dump(),
        seed=cfg.train.seed,
        versions=records.versions(),
        git_commit=records.git_commit(),
        environment=records.environment_facts(),
        attempts=[],
        warnings=list(job.warnings),
        pad=job.pad,
    )
    if job.logit_distill:
        record.logit_distill_teacher = job.logit_distill.teacher
    for warning in job.warnings:
        log(f"[{cfg.stage}] warning: {warning}")
    if record.pad and record.pad.how != "kept":
        log(f"[{cfg.stage}] pad token: {record.pad.content!r} (id {record.pad.id}) — {record.pad.reason}")
    return record


def read_record(store: Store, prefix: str) -> RunRecord | None:
    key = layout.run_record(prefix)
    return load_record(store, key, RunRecord) if store.exists(key) else None


def write_record(store: Store, record: RunRecord) -> None:
    """The record, with anything that looks like a secret redacted, beside the run's outputs."""
    store.write_json(layout.run_record(record.run_prefix), records.redact(record.to_json()))


def plan_run(pipeline: PipelineConfig, cfg: StageConfig, store: Store) -> tuple[TrainJob, str, dict, Manifest, str]:
    """The stage's recipe plans the job; the run is named by everything that changes its result.
    Returns (job, run id, identity, data manifest, data digest)."""
    job = RECIPES[cfg.stage].plan(cfg, StageContext(store, pipeline))
    manifest = read_manifest(store, cfg.data.dataset)
    data_digest = dataset_identity(store, cfg.data.dataset, manifest)
    identity = run_identity(cfg, job, data_digest)
    run_id = f"{cfg.stage}-{config_digest(cfg, {**identity, 'workers': job.workers})}"
    return job, run_id, identity, manifest, data_digest


def train(pipeline: PipelineConfig, cfg: StageConfig, store: Store) -> RunRecord:
    """Plan, train (or resume, or skip when finished) and return the run record."""
    recipe = RECIPES[cfg.stage]
    job, run_id, identity, manifest, data_digest = plan_run(pipeline, cfg, store)
    prefix = layout.run_prefix(cfg.stage, run_id)
    record = read_record(store, prefix)
    if record and record.status == "finished":
        log(f"[{cfg.stage}] run {run_id} already finished; not training again ({store.url(prefix)})")
        return record
    resume_identity = config_digest(cfg, identity)
    if record is None:
        refuse_other_world_size(store, cfg.stage, resume_identity, job.workers)
        record = new_record(pipeline, cfg, job, run_id, prefix, resume_identity, manifest, data_digest)
    for earlier in record.attempts:
        if earlier.status == "running":  # its driver died without finishing: preempted
            earlier.status = "interrupted"
            earlier.last_complete_checkpoint = layout.latest_checkpoint(store, prefix)
    resume_from = layout.latest_checkpoint(store, prefix)
    if resume_from and not resumable(store, resume_from):
        raise UserError(
            f"{cfg.stage}: run {run_id} stopped at {store.url(resume_from)}, whose DeepSpeed optimizer "
            f"state was pruned (keep_optimizer_states); it cannot resume exactly. Change the config "
            f"(e.g. train.seed) to start a new run"
        )
    record.status = "running"
    record.attempts.append(
        Attempt(
            attempt=len(record.attempts) + 1,
            status="running",
            started_at=records.now(),
            resume_from=resume_from,
            workers=job.workers,
        )
    )
    if resume_from:
        log(
            f"[{cfg.stage}] run {run_id} was interrupted; attempt {len(record.attempts)} resumes from "
            f"{store.url(resume_from)}"
        )
    job = job.model_copy(update={"run_id": run_id, "run_prefix": prefix, "attempt": len(record.attempts)})
    write_record(store, record)
    cluster.connect()
    log(
        f"[{cfg.stage}] run {run_id}: {job.recipe} on {job.workers} Ray Train workers "
        f"({'GPU' if job.use_gpu else 'CPU'}), DeepSpeed ZeRO-{record.deepspeed.zero_stage}, "
        f"{record.deepspeed.optimizer}"
    )
    try:
        engine.run(job, recipe)
    except BaseException as exc:
        record.status = "failed"
        last = record.attempts[-1]
        last.status, last.ended_at = "failed", records.now()
        last.error = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
        record.init_gate = read_init_gate(store, prefix)
        write_record(store, record)
        raise
    return finish_record(store, record, job)


def prune_after_finish(store: Store, prefix: str, stage: str, keep: int) -> StorageSummary:
    """The run is finished: DeepSpeed's resume state goes from all checkpoints but the newest `keep`
    (some were pruned already while training, with at least one kept to resume from)."""
    pruned_now = prune_resume_state(store, prefix, keep)
    manifests = {key: store.tree_manifest(key) for _, key in layout.complete_checkpoints(store, prefix)}
    after = sum(info["size"] for m in manifests.values() for info in m["files"].values())
    before = after + sum(p["bytes"] for p in pruned_now)
    pruned = [{"checkpoint": key, **m["pruned"]} for key, m in manifests.items() if "pruned" in m]
    kept = [key for key, m in manifests.items() if holds_resume_state(m)]
    freed = sum(p["bytes"] for p in pruned)
    if pruned:
        log(
            f"[{stage}] storage: optimizer state pruned from {len(pruned)} checkpoint(s), "
            f"{freed / 1e6:,.1f} MB freed; kept in {', '.join(k.rsplit('/', 1)[-1] for k in kept) or 'none'} "
            f"(keep_optimizer_states={keep}); checkpoints now {after / 1e6:,.1f} MB"
        )
    return StorageSummary(
        keep_optimizer_states=keep,
        resumable_checkpoints=kept,
        pruned=pruned,
        bytes_freed=freed,
        checkpoint_bytes_before_final_prune=before,
        checkpoint_bytes=after,
    )


def finish_record(store: Store, record: RunRecord, job: TrainJob) -> RunRecord:
    prefix, stage = record.run_prefix, record.stage
    facts = load_record(store, layout.engine_facts(prefix), EngineFacts)
    history = store.read_json(layout.log_history(prefix))
    ckpts = checkpoints(store, prefix)
    if not ckpts:
        raise UserError(f"{stage}: training finished without a complete checkpoint in {store.url(prefix)}")
    record.status = "finished"
    record.finished_at = records.now()
    record.engine = facts
    record.training = training_summary(history)
    record.init_gate = read_init_gate(store, prefix)
    if facts.stopped_early:
        stop = facts.stopped_early
        log(
            f"[{stage}] early stopping at step {stop['step']} of {stop['planned_steps']}: {stop['metric']} did not "
            f"improve by more than {stop['min_delta']:g} for {stop['patience']} evaluations (best {stop['best']:.4f})"
        )
    record.checkpoints = [c.key for c in ckpts]
    record.model = model_facts(store, ckpts[-1].key, facts.parameters)
    loss_png = layout.loss_plot(prefix)
    store.write_bytes(loss_png, plots.loss_curve(history, f"{stage} · {record.run_id}", [c.step for c in ckpts]))
    record.plots = {"loss": loss_png}
    record.attempts[-1].status, record.attempts[-1].finished_at = "finished", record.finished_at
    record.worker_group_starts = worker_group_starts(store, prefix)
    record.storage = prune_after_finish(store, prefix, stage, job.keep_optimizer_states)
    restarts = [s for s in record.worker_group_starts if s.resume_from]
    if restarts:
        log(
            f"[{stage}] resumed {len(restarts)} time(s): "
            + "; ".join(f"attempt {s.attempt} from {s.resume_from.rsplit('/', 1)[-1]}" for s in restarts)
        )
    # the init gate judged the step-0 loss before training; with the gate off, the old look afterwards
    warning = (
        None
        if record.init_gate
        else init_loss_warning(record.training.first_loss, record.model.vocab_size, record.init.spec)
    )
    if warning:
        record.warnings.append(warning)
        log(f"[{stage}] warning: {warning}")
    tokenizer = load_tokenizer(job.tokenizer.materialize(), job.trust_remote_code, job.chat_template)
    if tokenizer.chat_template:
        record.chat_template_example = prompt_text(tokenizer, "<your question>")
    write_record(store, record)
    t = record.training
    log(
        f"[{stage}] finished: loss {t.first_loss:.4f} → {t.last_loss:.4f}, "
        f"{len(ckpts)} checkpoints, world size {facts.world_size}, ZeRO stage {facts.zero_stage}"
    )
    return record
