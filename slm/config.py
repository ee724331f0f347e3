"""Typed configs for stages, data builders and the pipeline.

Every model forbids unknown keys; `load_yaml_config` turns pydantic's error into one line that names
the file, the key path and the problem. Paths inside configs are relative to the project root.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

from slm import PROJECT_ROOT, SHIPPED_ROOT, STAGE_ORDER, STAGES, layout
from slm.errors import UserError

StageName = Literal[STAGE_ORDER]  # the registry in slm/__init__.py


class Strict(BaseModel):
    # inf and NaN are no setting (lr=inf, weight_decay=.inf, max_grad_norm=nan): refused like unknown keys
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSpec(Strict):
    """Where a stage's starting weights come from.

    init: `scratch` (build from `architecture`), `champion:<line>` (the line's latest),
    `champion:<line>:<stage>` (the newest champion promoted from that stage), `champion:<line>@<version>`,
    `store:<key>` (a model directory in the pipeline's store), `s3://bucket/key`, `hf:<repo>[@rev]`
    (the Hugging Face hub), or a local directory.
    architecture: with `scratch`, what to build; with a pretrained init, what the checkpoint must be
    (every stated field is compared with its config.json, mismatches are named).
    """

    init: str
    architecture: dict[str, Any] | None = None
    tokenizer: str | None = None
    trust_remote_code: bool = False
    chat_template: str | None = None

    @model_validator(mode="after")
    def _scratch_needs_architecture(self):
        if self.init == "scratch" and (not self.architecture or not self.tokenizer):
            raise ValueError("init: scratch needs both `architecture` and `tokenizer`")
        if self.architecture is not None and "model_type" not in self.architecture:
            raise ValueError("architecture needs `model_type` (gpt2, llama, qwen2, ...)")
        return self


class DataSpec(Strict):
    dataset: str  # a dataset key in the store, written by a data builder
    max_length: int = Field(256, gt=8)
    eval_split: str | None = None  # e.g. "validation": evaluated every save_steps


class EMASpec(Strict):
    """An exponential moving average of the weights, updated after every optimizer step (slm/callbacks.py)
    and saved in each checkpoint; the sweep scores the last one as a candidate beside the checkpoints."""

    decay: float = Field(gt=0, lt=1)  # 0.99: an average over about the last 100 steps


class InitGateSpec(Strict):
    """Plan 004's fail-fast on a pretrained init (slm/callbacks.py InitGateCallback): before the first
    optimizer step its loss must be at most `max_loss` and below ln(vocab), the loss of a fresh random
    init; otherwise the weights most likely did not load and the run stops before spending its budget."""

    max_loss: float = Field(6.0, gt=0)  # plan 004: init_loss(step=0) <= 6.0 < from_scratch_loss(step=0)
    batches: int = Field(4, gt=0)  # micro-batches per worker, from the first training rows (no eval split)


class EarlyStoppingSpec(Strict):
    """HF's EarlyStoppingCallback on the validation loss: stop once it has not improved by more than
    `min_delta` for `patience` evaluations in a row (evaluations come every save_steps)."""

    metric: Literal["eval_loss"] = "eval_loss"
    patience: int = Field(gt=0)
    min_delta: float = Field(0.0, ge=0)


class TrainSpec(Strict):
    lr: float = Field(gt=0)
    schedule: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    epochs: float = Field(1.0, gt=0)
    # > 0 overrides epochs; -1: train for `epochs` (0 is refused: the HF Trainer would read it as "epochs").
    # The bounds only refuse values no run can reach (a typo's extra zeros), not large runs.
    max_steps: int = Field(-1, ge=-1, le=100_000_000)
    save_steps: int = Field(gt=0)
    seed: int = 42
    micro_batch: int = Field(gt=0)
    grad_accum: int = Field(1, gt=0, le=65_536)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    logging_steps: int = Field(1, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # The knobs users of the HF Trainer reach for first:
    warmup_ratio: float = Field(0.0, ge=0, lt=1)  # a fraction of the run's steps; use this or warmup_steps
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more compute
    # the cross-entropy: the model's own (standard), or without the full-vocabulary logits (slm/losses.py):
    # chunked (plain torch, any device) or liger (Liger-Kernel's fused kernel, GPU, `pip install liger-kernel`)
    loss: Literal["standard", "chunked", "liger"] = "standard"
    # several examples per row with attention kept inside each (slm/packing.py); unset: on wherever the
    # model's masking supports it (chat stages and pretraining; dpo pads its pairs). Part of every run id:
    # runs planned before packing existed trained padded, so they are not resumed packed.
    packing: bool | None = None
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"] | None = (
        None
    )
    optim: str | None = None  # an HF Trainer optimizer name (adamw_torch, adafactor, ...): replaces the DS config's
    # Any other TrainingArguments field, passed through as given; TrainingArguments itself validates it
    # (before launch) and a field the keys above already set is refused.
    extra: dict[str, Any] = {}
    ema: EMASpec | None = None
    init_gate: InitGateSpec | None = Field(
        default_factory=InitGateSpec
    )  # null: off (it never applies to init: scratch)
    early_stopping: EarlyStoppingSpec | None = None  # needs data.eval_split

    @model_validator(mode="after")
    def _one_warmup(self):
        if self.warmup_ratio and self.warmup_steps:
            raise ValueError("give warmup_steps or warmup_ratio, not both")
        if self.max_steps == 0:
            raise ValueError("max_steps: 0 trains nothing; give a step count, or -1 to train for `epochs`")
        return self


class KLAnchorSpec(Strict):
    """A KL term to the frozen starting model, KL(start ‖ trained) per supervised token, against forgetting."""

    coef: float = Field(gt=0)
    start_step: int = Field(0, ge=0)  # the term is off before this optimizer step
    warmup_steps: int = Field(0, ge=0)  # then its weight ramps linearly from 0 to coef
    last_k_tokens: int | None = Field(None, gt=0)  # only the last K supervised tokens of each sequence


class LoRASpec(Strict):
    """Train a PEFT LoRA adapter instead of all weights; every checkpoint also holds the merged full model."""

    r: int = Field(8, gt=0)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class LogitDistillSpec(Strict):
    """distill only: forward KL(teacher ‖ student) on the teacher's logits (same tokenizer required)."""

    teacher: str  # model reference, same grammar as model.init
    temperature: float = Field(1.0, gt=0)
    alpha: float = Field(0.5, gt=0, le=1)  # loss = (1 - alpha) · cross-entropy + alpha · T² · KL


class DPOSpec(Strict):
    """dpo only: TRL's DPOTrainer over preference pairs, against the frozen starting model."""

    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust"] = "sigmoid"


class ExperimentSpec(Strict):
    """A run tried against the stage's current champion: promoted only if it wins, kept on record either way."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    hypothesis: str = ""


class StageConfig(Strict):
    stage: StageName
    description: str = ""
    objective: Literal["causal_lm", "chat_sft", "dpo"]
    model: ModelSpec
    data: DataSpec
    train: TrainSpec
    deepspeed: str = "ds_configs/zero2.json"
    kl_anchor: KLAnchorSpec | None = None
    lora: LoRASpec | None = None
    logit_distill: LogitDistillSpec | None = None
    dpo: DPOSpec | None = None
    experiment: ExperimentSpec | None = None

    @model_validator(mode="after")
    def _objective_fits_stage(self):
        expected = STAGES[self.stage]
        if self.objective != expected:
            raise ValueError(f"stage {self.stage} trains with objective {expected!r}, not {self.objective!r}")
        if self.stage == "pretrain" and (self.kl_anchor or self.lora):
            raise ValueError("kl_anchor and lora are options of the fine-tuning stages, not of pretrain")
        if self.logit_distill and self.stage != "distill":
            raise ValueError(f"logit_distill is an option of the distill stage, not of {self.stage}")
        if self.stage == "dpo" and self.kl_anchor:
            raise ValueError("dpo is already anchored to its starting model (beta); kl_anchor does not apply")
        if self.dpo and self.stage != "dpo":
            raise ValueError(f"`dpo` settings belong to the dpo stage, not to {self.stage}")
        if self.train.early_stopping and not self.data.eval_split:
            raise ValueError("train.early_stopping watches the validation loss: set data.eval_split")
        if self.train.loss != "standard" and (self.kl_anchor or self.logit_distill or self.stage == "dpo"):
            raise ValueError(
                f"train.loss {self.train.loss} computes the cross-entropy alone; kl_anchor, logit_distill and dpo "
                "need the full logits (use train.loss: standard)"
            )
        if self.lora and self.train.ema:
            raise ValueError("train.ema averages all weights; with lora only the adapter trains (use one or the other)")
        return self


ROW_FORMATS = ("messages", "sharegpt", "alpaca", "prompt_response", "question_answer", "mcq", "text")


class BuilderInput(Strict):
    """One source of a builder, with a mixing weight. Exactly one of:

    path: a local file, directory or glob, or an `s3://bucket/key` (glob allowed): JSONL (`.jsonl`,
      `.json`), Parquet (`.parquet`), plain text (`.txt`, a document per line), or a directory
      written by `datasets.save_to_disk`;
    hf: a Hugging Face hub dataset id (with `config`, `split`, `revision`, `streaming`);
    dataset: a dataset already built into the store (its train split; chat builders only).

    format: how a row becomes a conversation or a document (see ROW_FORMATS); inferred from the
    columns when not given."""

    path: str | None = None
    hf: str | None = None
    dataset: str | None = None
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    streaming: bool = True
    format: Literal[ROW_FORMATS] | None = None
    limit: int | None = Field(None, gt=0)  # at most this many rows from the source
    # the source's own column names → the names its format reads, e.g. {conversation: messages} (as
    # LLaMA-Factory's dataset_info `columns`): hub datasets do not all use the common layouts' names
    columns: dict[str, str] = {}
    # each row is a struct under this column (applied before `columns`): cais/mmlu's auxiliary_train
    # config holds every row under `train` ({"train": {"question", "choices", "answer", "subject"}})
    field: str | None = None
    # chat builders: rows whose last assistant answer is longer are dropped and counted in the manifest
    # (knowledge repair's concise-fact block: answers under 100 characters)
    max_answer_chars: int | None = Field(None, gt=0)
    name: str | None = None
    weight: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _one_source(self):
        if sum(x is not None for x in (self.path, self.hf, self.dataset)) != 1:
            raise ValueError(
                "give exactly one of `path` (a file, glob or s3:// URI), `hf` (a hub dataset) or "
                "`dataset` (a store key)"
            )
        if self.hf is None and (self.config or self.revision):
            raise ValueError("`config` and `revision` belong to an `hf` source")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        where = self.path or self.hf or self.dataset
        stem = where.rstrip("/").rsplit("/", 1)[-1]
        return stem.split(".", 1)[0] if self.path else stem


class HygieneSpec(Strict):
    """Deduplication and decontamination, before mixing: exact duplicates (normalised text), near
    duplicates (MinHash LSH on word shingles, datasketch), and rows sharing a word n-gram with any
    evaluation the sweep runs (all of MMLU's test and dev questions with their choices, the bench,
    extra lm-eval tasks). Dropped rows are counted per source and eval set, a few kept as samples."""

    dedup: bool = True
    near_dedup: bool = True
    near_threshold: float = Field(0.8, gt=0, lt=1)  # estimated Jaccard similarity of word shingles
    shingle_words: int = Field(3, gt=0)  # short chat rows: a one-word edit keeps ~90% of 3-word shingles
    num_perm: int = Field(128, ge=16)
    decontaminate: bool = True
    ngram: int = Field(13, gt=1)  # as lm-eval's decontamination and the GPT-3 paper
    min_item_words: int = Field(4, gt=0)  # shorter eval items ("What is 2+2?") are too generic to match whole
    samples: int = Field(3, ge=0)  # dropped rows kept in the manifest per source and reason


class BuilderConfig(Strict):
    """What a data builder reads and where it writes (the builder module is data_builders/<builder>.py)."""

    builder: Literal[("tokenizer", *STAGE_ORDER)]
    inputs: list[BuilderInput] = Field(min_length=1)
    output: str  # store key
    num_shards: int = Field(2, gt=0)
    max_shard_rows: int = Field(100_000, gt=0)  # more shards when a split outgrows num_shards of these
    seed: int = 0
    validation_fraction: float = Field(0.0, ge=0, lt=1)
    hygiene: HygieneSpec = HygieneSpec()
    tokenizer: str | None = None  # pretrain: store key / path of the tokenizer used to pack blocks
    block_size: int | None = None  # pretrain: tokens per packed block
    teacher: str | None = None  # distill: model reference (same grammar as ModelSpec.init)
    max_new_tokens: int = 48  # distill: teacher answer length
    teacher_workers: int = Field(0, ge=0)  # distill: 0 answers in this process; N: N Ray actors in parallel
    teacher_gpu: bool = False  # distill: each actor (or this process) on a GPU
    teacher_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    teacher_batch_size: int = Field(16, gt=0)
    vocab_size: int | None = None  # tokenizer builder


class ClusterSpec(Strict):
    workers: int = Field(2, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1, gt=0)
    max_failures: int = Field(1, ge=0)
    # Peak dense TFLOP/s of one worker's device for the MFU column; None: looked up from the GPU's
    # name (see slm/mfu.py), and left empty on CPU, whose peak we cannot know.
    peak_tflops_per_worker: float | None = Field(None, gt=0)
    # The device memory of one worker's GPU: the dry run refuses a stage whose estimate (slm/memory.py)
    # does not fit it. None: the estimate is printed, not checked.
    gpu_memory_gb: float | None = Field(None, gt=0)
    # How Ray Train places the workers on the nodes (its ScalingConfig.placement_strategy): PACK fills a
    # node first; STRICT_SPREAD puts each worker on a node of its own.
    placement: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = "PACK"
    # Environment for every training worker and the preflight's tasks (NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME,
    # ...: overlay networks such as Vast.ai's and RunPod's need the interface named); sweep scoring tasks run
    # no collectives and do not get it.
    env: dict[str, str] = {}
    # A local-directory store on a cluster of more than one node is refused (each node would write its
    # own) unless this says the path is one shared filesystem (NFS, a mounted bucket) on every node.
    store_shared: bool = False


class SweepSpec(Strict):
    mmlu_dir: str = "../shared/data/mmlu"  # the original CSV layout, or hf:cais/mmlu (online)
    subjects: list[str] | Literal["all"] = "all"
    limit: StrictInt | None = Field(None, gt=0)  # items per subject; None = every item
    num_fewshot: int = Field(0, ge=0, le=5)
    mmlu_dev: bool = True  # also score MMLU's dev split (285 items at full size), 0-shot, as a row of its own
    bench: str | None = "eval/benches/truth106.jsonl"  # None: MMLU (and extra tasks) only
    bench_max_new_tokens: int = Field(32, gt=0)
    # A second bench that no builder reads (eval/benches/README.md): scored and gated like the bench,
    # never used to choose between checkpoints, and part of the decontamination index.
    heldout: str | None = None
    # Prompts whose greedy replies from the gate's reference model are teacher-forced on every other
    # candidate (eval/drift.py): the per-token log-likelihood of them, paired per prompt, tracks drift.
    drift: str | None = None
    batch_size: int = Field(16, gt=0)
    prompt_template: str | None = None  # None: the model's chat template
    extra_tasks: list[str] = []  # any lm-eval task names, e.g. [gsm8k, truthfulqa_mc1, truthfulqa_mc2]
    extra_num_fewshot: int | None = None  # None: each task's own default
    local_datasets: dict[str, str] = {}  # hub dataset id -> local directory (offline), see eval/local_data.py
    score_precursor: bool = True
    # Other runs of a stage swept with the one being run, by run id (`repair-0123456789`, as the stage's
    # log prints it): e.g. a 1-epoch and a 3-epoch run of repair compared in one selection. Each must be
    # a finished run of the same stage from the same input model; the champion may come from any of them.
    runs: dict[StageName, list[str]] = {}
    # A model scored once beside the candidates as a ceiling row (e.g. hf:Qwen/Qwen2.5-0.5B-Instruct for a
    # line trained from the base): in the report and on the card, never a candidate, never gated against.
    reference: str | None = None

    @field_validator("runs")
    @classmethod
    def _run_ids(cls, runs):
        for stage, ids in runs.items():
            for run_id in ids:
                if not layout.RUN_KEY.fullmatch(layout.run_prefix(stage, run_id)):
                    raise ValueError(f"runs.{stage}: {run_id!r} is not a run id of {stage} ({stage}-<10 hex digits>)")
        return runs


class GateSpec(Strict):
    """Promote a stage's champion only when it is not significantly worse than the stage's input model
    (paired tests: MMLU per item, the bench per prompt, overall and per category)."""

    enabled: bool = True
    alpha: float = Field(0.05, gt=0, lt=1)
    bench_categories: bool = True  # also test each bench category on its own
    # The bench's teacher-forced answer margin (eval.bench.answer_margins), paired per item (Wilcoxon):
    # worse only beyond this mean drop in nats per token. 0.05 is about 8x the shift of a bf16 round
    # trip of SmolLM2-135M (-0.006, p = 2e-5 over 105 prompts: the same function) and a tenth of what
    # small weight noise costs it (-0.58); `continuous: false` reports them without gating on them.
    continuous: bool = True
    continuous_floor: float = Field(0.05, ge=0)
    # MMLU's probability of the correct choice (normalised over the four), paired per item: worse only
    # beyond a mean drop of this much probability (0.01: one point, a tenth of the gap between chance
    # and a small model's typical confidence).
    continuous_floor_mmlu: float = Field(0.01, ge=0)
    # The drift set's per-token log-likelihood of the input model's own replies (sweep.drift), paired per
    # prompt: worse only beyond this mean drop in nats per token. Measured on SmolLM2-135M-Instruct over
    # the 40 shipped prompts: a bf16 round trip moves it +0.0007 (p = 0.0009: significant, harmless);
    # Gaussian noise of 0.03 of each tensor's spread -0.085 (p = 1e-10) while its 0/1 counts stay within
    # noise, 0.05 of the spread -0.225; the make-real format stage +0.125 (self-replay sharpens it).
    drift_floor: float = Field(0.05, ge=0)


class SelectionPolicy(Strict):
    primary: Literal["mmlu"] = "mmlu"
    margin: float = Field(0.005, ge=0)  # absolute accuracy (0.005 = 0.5 points)
    guarded_domains: list[str] = []  # MMLU subjects or macro domains (stem, humanities, ...)
    max_guard_regressions: int = Field(0, ge=0)
    regression_tolerance_se: float = Field(1.0, ge=0)  # a drop counts beyond this many SEs
    alpha: float = Field(0.05, gt=0, lt=1)
    # A leader whose bench pass rate (overall or in a category) is significantly below the runner-up's
    # is rejected unless its MMLU lead is itself significant (both paired tests at `alpha`).
    bench_guard: bool = True
    gate: GateSpec = GateSpec()


class MergeSpec(Strict):
    enabled: bool = True
    t: list[float] = [0.1]
    # More SLERP pairs beside champion × precursor, the first of each the base: "champion", "runner_up",
    # "precursor", or a candidate's name (e.g. checkpoint-60).
    pairs: list[tuple[str, str]] = []
    # A uniform average of the last k complete checkpoints (mergekit's linear merge), scored as one more
    # candidate: 0 is off, 1 would be the last checkpoint itself.
    average_last: int = Field(0, ge=0, le=32)

    @field_validator("average_last")
    @classmethod
    def _an_average_of_several(cls, k):
        if k == 1:
            raise ValueError("average_last: 1 is the last checkpoint itself; give 0 (off) or k >= 2")
        return k

    @field_validator("t")
    @classmethod
    def _t_in_unit_interval(cls, values):
        for t in values:
            if not 0.0 < t < 1.0:
                raise ValueError(f"SLERP t must be in (0, 1), got {t}")
        return values


class CardSpec(Strict):
    # None: the base model's licence (from its card: a local model's README.md, or the hub card in the
    # local HF cache) for a line grown from one, apache-2.0 for a line trained from scratch.
    license: str | None = None
    language: list[str] = ["en"]
    author: str | None = None  # the card's Author row and its citation
    url: str | None = None  # where the model is published, for the citation (e.g. the hub page)
    provider: str | None = None  # the compute provider named in "Compute infrastructure" (e.g. Vast.ai)


class StageRef(Strict):
    name: StageName
    config: str
    builders: list[str] = []  # builder configs run before the stage, in order
    set: dict[str, Any] = {}  # overrides of the stage config, e.g. {train: {max_steps: 10}}


class PipelineConfig(Strict):
    line: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    store: str
    cluster: ClusterSpec = ClusterSpec()
    stages: list[StageRef] = Field(min_length=1)
    sweep: SweepSpec = SweepSpec()
    selection: SelectionPolicy = SelectionPolicy()
    merge: MergeSpec = MergeSpec()
    card: CardSpec = CardSpec()
    # DeepSpeed optimizer shards (about 12 bytes a parameter: 24 GB a checkpoint at 2B) are kept in the
    # store for the newest N complete checkpoints of a run, pruned from older ones as training goes and
    # when it finishes (recorded in the run record). The weights of every checkpoint stay for the sweep;
    # resuming needs only the newest checkpoint's shards, so during training at least 1 is kept.
    keep_optimizer_states: int = Field(1, ge=0)
    # Checkpoints go to the store in the background while training goes on (the local write is the only
    # pause; at most one upload in flight): false uploads before training continues, as it used to.
    background_upload: bool = True

    @model_validator(mode="after")
    def _stages_in_order(self):
        names = [s.name for s in self.stages]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"stage(s) listed more than once: {', '.join(twice)}")
        order = [n for n in STAGE_ORDER if n in names]
        if names != order:
            raise ValueError(f"stages must run in the order {', '.join(STAGE_ORDER)}; got {', '.join(names)}")
        return self

    def stage(self, name: str) -> StageRef:
        for ref in self.stages:
            if ref.name == name:
                return ref
        known = ", ".join(s.name for s in self.stages)
        hint = (
            " (dpo is optional: list it in the pipeline, as stages/examples/tiny-with-experiments.yaml does)"
            if name == "dpo"
            else ""
        )
        raise UserError(f"unknown stage {name!r}: this pipeline has {known}{hint}")


Model = TypeVar("Model", bound=BaseModel)


def resolve_path(path: str | Path) -> Path:
    """A relative path in a config or on the command line: the user's project first (the checkout, or
    the current directory when slm is installed), then the shipped tree (stages/configs/sft.yaml,
    ds_configs/zero2.json, ...); a path found in neither names the project's (for the error, or an output)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for root in (PROJECT_ROOT, SHIPPED_ROOT):
        if (root / p).exists():
            return root / p
    return PROJECT_ROOT / p


def _describe(err: dict) -> str:
    loc = ".".join(str(x) for x in err["loc"]) or "<top level>"
    if err["type"] == "extra_forbidden":
        return f"unknown key {loc!r}"
    if err["type"] == "missing":
        return f"missing key {loc!r}"
    return f"{loc}: {err['msg']}"


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`a.b=3` → {"a": {"b": 3}}; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"override {pair!r} is not of the form key.path=value")
        key, raw = pair.split("=", 1)
        if not key or any(not part for part in key.split(".")):
            raise UserError(f"--set {pair}: {key!r} is not a key path (e.g. train.lr)")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(
                    f"--set {pair}: {'.'.join(parts[: parts.index(part) + 1])} is set to a value "
                    f"by another --set, so it has no keys"
                )
        node[parts[-1]] = _scalar(raw, pair)
    return out


def _scalar(raw: str, pair: str):
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"--set {pair}: the value is not valid YAML ({problem})") from None
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string; users mean the number
        try:
            return float(value)
        except ValueError:
            pass
    return value


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(file: Path, what: str = "config"):
    """A YAML file's contents; a syntax error is one line with its line and column."""
    try:
        text = file.read_text()
    except UnicodeDecodeError as exc:
        raise UserError(f"{file}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except RecursionError:
        raise UserError(f"{file}: not valid YAML: nested too deeply to read") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{file}: not valid YAML{where}: {problem}") from None


def load_yaml_config(
    path: str | Path,
    model: type[Model],
    overrides: dict | None = None,
    origins: dict[tuple[str, ...], str] | None = None,
) -> Model:
    """Load a config file with overrides merged over it. `origins` names where an override's key
    came from (`--set train.lr=x`, a pipeline's `set:`), so a bad value is blamed on what the user
    typed rather than on the file it was merged into."""
    file = resolve_path(path)
    if file.is_dir():
        raise UserError(f"{file}: is a directory, not a config file")
    if not file.is_file():
        raise UserError(f"config file not found: {file}")
    raw = read_yaml(file)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{file}: expected a mapping at the top level, found {type(raw).__name__}")
    if overrides:
        raw = deep_merge(raw, overrides)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_explain(file, exc, origins or {})) from None


def _explain(file: Path, exc: ValidationError, origins: dict[tuple[str, ...], str]) -> str:
    blamed: dict[str, list[str]] = {}
    for err in exc.errors():
        loc = tuple(str(x) for x in err["loc"])
        matching = [label for path, label in origins.items() if loc[: len(path)] == path or path[: len(loc)] == loc]
        origin = matching[-1] if matching else None  # the last --set to touch a key is the one that stands
        blamed.setdefault(f"{origin} (over {file})" if origin else str(file), []).append(_describe(err))
    return "; ".join(f"{where}: {'; '.join(problems)}" for where, problems in blamed.items())


def leaf_paths(tree: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in tree.items():
        path = (*prefix, str(key))
        out += leaf_paths(value, path) if isinstance(value, dict) and value else [path]
    return out


@dataclass(frozen=True)
class StageOverride:
    """Values merged over a stage's config file (a pipeline's `set:`, a --set), with what set each key
    path, so that a bad value is blamed on what the user typed rather than on the file it was merged into."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[tuple[str, ...], str] = field(default_factory=dict)

    def then(self, later: StageOverride) -> StageOverride:
        """This override, then `later` over it (the later one wins a key both set)."""
        return StageOverride(deep_merge(self.values, later.values), {**self.origins, **later.origins})


def override_origins(pairs: list[str], label: str | None = None) -> dict[tuple[str, ...], str]:
    """Key path → what set it (`--set <pair>` unless a label is given), for `load_yaml_config`'s blame."""
    return {tuple(pair.split("=", 1)[0].split(".")): label or f"--set {pair}" for pair in pairs if "=" in pair}


# Keys added to a config after runs were named by it: left out of the digest while at their default,
# so a config that does not use them keeps its run id (an unfinished run of it still resumes).
DIGEST_OMITS_DEFAULT = {
    TrainSpec: (
        "warmup_ratio",
        "gradient_checkpointing",
        "attn_implementation",
        "optim",
        "extra",
        "ema",
        "init_gate",
        "early_stopping",
        "loss",
    ),
    BuilderInput: ("columns", "max_answer_chars", "field"),
}


def _digest_view(model: BaseModel) -> dict:
    data = model.model_dump(mode="json")
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if name in DIGEST_OMITS_DEFAULT.get(type(model), ()) and value == info.get_default(call_default_factory=True):
            del data[name]
        elif isinstance(value, BaseModel):
            data[name] = _digest_view(value)
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            data[name] = [_digest_view(v) for v in value]
    return data


def config_digest(*parts: BaseModel | dict | str) -> str:
    """A short stable hash of configs (used to name runs and cache scores)."""
    h = hashlib.sha256()
    for part in parts:
        data = _digest_view(part) if isinstance(part, BaseModel) else part
        h.update(json.dumps(data, sort_keys=True, default=str).encode())
    return h.hexdigest()[:10]
