"""`runs/<stage>/<run_id>/record.json` as a typed record: what produced a run, beside its outputs.

Training builds it, the sweep, promotion and the card read it. Unknown fields are refused, and the
JSON form is exactly the keys the record holds (slm.records.Stored), so a record written by any
earlier run loads and writes back unchanged.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from slm.config import ClusterSpec, StageConfig
from slm.datasets import Manifest
from slm.padding import PadPlan
from slm.records import Stored
from slm.refs import ModelRef


class DeepSpeedFacts(Stored):
    config_file: str
    config: dict[str, Any]  # the DeepSpeed JSON as the engine used it
    zero_stage: int
    optimizer: str | None = None


class Attempt(Stored):
    """One launch of the run by a driver (a rerun after the job died is the next attempt)."""

    attempt: int
    status: str  # running | finished | failed | interrupted
    started_at: str
    resume_from: str | None = None
    workers: int | None = None
    ended_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    last_complete_checkpoint: str | None = None


class WorkerGroupStart(Stored):
    """One start of the Ray Train worker group (first launch, a FailureConfig restart, a rerun)."""

    attempt: int
    started_at: str
    resume_from: str | None = None
    world_size: int | None = None


class EngineFacts(Stored):
    """What the worker group reported when training ended (`train/engine.json`)."""

    engine: str | None = None
    zero_stage: int | None = None
    world_size: int | None = None
    backend: str | None = None
    deepspeed: str | None = None
    device: str | None = None
    parameters: int
    trainable_parameters: int | None = None
    lora: dict[str, Any] | None = None
    train_rows: int | None = None
    global_step: int | None = None
    tokens_seen: int | None = None
    resumed_from: str | None = None
    torch_threads: int | None = None
    tied_embeddings: bool | None = None
    planned_steps: int | None = Field(None, exclude_if=lambda v: v is None)
    device_name: str | None = Field(None, exclude_if=lambda v: v is None)  # the GPU model, or the CPU
    stopped_early: dict[str, Any] | None = Field(None, exclude_if=lambda v: v is None)
    packing: dict[str, Any] | None = Field(None, exclude_if=lambda v: v is None)  # rows, examples, tokens, fill
    niceness: int | None = Field(None, exclude_if=lambda v: v is None)  # the workers' (slm.cluster.WORK_ENV)
    worker_nodes: list[str] | None = Field(None, exclude_if=lambda v: v is None)  # each rank's node address


class InitGateResult(Stored):
    """The step-0 loss of a pretrained init and the gate's verdict (`train/init_gate.json`)."""

    loss: float
    measured_on: str
    max_loss: float
    random_init_loss: float
    passed: bool
    attempt: int
    message: str | None = None


class TrainingSummary(Stored):
    first_loss: float | None = None
    last_loss: float | None = None
    min_loss: float | None = None
    loss_fell: bool | None = None
    eval: list[dict[str, float | int]] = []
    train_runtime_s: float | int | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None


class ModelFacts(Stored):
    architecture: str | None = None
    parameters: int
    hidden_size: int | None = None
    layers: int | None = None
    heads: int | None = None
    vocab_size: int | None = None
    context: int | None = None
    tie_word_embeddings: bool | None = None


class PrunedState(Stored):
    checkpoint: str
    files: list[str]
    bytes: int
    at: str


class StorageSummary(Stored):
    """What the store keeps of the run's checkpoints once it finished (slm/checkpoints.py)."""

    keep_optimizer_states: int
    resumable_checkpoints: list[str]
    pruned: list[PrunedState]
    bytes_freed: int
    checkpoint_bytes_before_final_prune: int
    checkpoint_bytes: int


class ExperimentVerdict(Stored):
    """An experiment's spec (name, hypothesis) and, once judged against the incumbent, its verdict
    (also `experiments/<line>/<run_id>.json`)."""

    name: str
    hypothesis: str = ""
    stage: str | None = None
    run_id: str | None = None
    run_record: str | None = None
    status: str | None = None  # accepted | rejected
    reason: str | None = None
    candidate: str | None = None
    incumbent: str | None = None
    incumbent_key: str | None = None
    noise: dict[str, Any] | None = None
    mmlu: dict[str, float | None] | None = None
    bench: dict[str, float | None] | None = None
    decided_at: str | None = None


class NotPromoted(Stored):
    """The gate kept the stage's champion out of the line (also `gates/<line>/<stage>.json`)."""

    status: str
    stage: str
    run_id: str
    candidate: str | None
    reason: str
    gate: dict[str, Any]  # the selection report's gate verdict, as it was
    # the verdict as evaluate --baseline writes gate.json: {model, passed, tests: [{name, kind, n, effect, p, ...}]}
    judged: dict[str, Any] | None = None
    run_record: str
    decided_at: str
    overrule: str


class RunRecord(Stored):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    stage: str
    run_id: str
    run_prefix: str
    line: str
    recipe: str
    resume_identity: str
    experiment: ExperimentVerdict | None = None
    config: StageConfig
    init: ModelRef  # the resolved reference the run started from ({"spec": "scratch"} from scratch)
    tokenizer: ModelRef
    data: Manifest
    data_manifest_sha256: str
    deepspeed: DeepSpeedFacts
    cluster: ClusterSpec
    seed: int
    versions: dict[str, str | None]
    git_commit: str | None = None
    environment: dict[str, Any]
    attempts: list[Attempt] = []
    warnings: list[str] = []
    pad: PadPlan | None = None
    logit_distill_teacher: ModelRef | None = None
    status: str | None = None  # running | finished | failed
    finished_at: str | None = None
    engine: EngineFacts | None = None
    training: TrainingSummary | None = None
    checkpoints: list[str] = []
    model: ModelFacts | None = None
    plots: dict[str, str] | None = None
    worker_group_starts: list[WorkerGroupStart] = []
    storage: StorageSummary | None = None
    chat_template_example: str | None = None
    promotion: NotPromoted | None = None
    init_gate: InitGateResult | None = Field(None, exclude_if=lambda v: v is None)
