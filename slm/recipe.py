"""The protocol every stage recipe follows, and what recipes need from the driver (StageContext).

A recipe is a module in `stages/` with three functions, read top to bottom as its stage:

    plan(cfg, ctx) -> TrainJob                 in the driver: check the inputs, resolve models, plan the job
    examples(job, tokenizer, split) -> Dataset in each worker: how the stage's rows become training examples
    trainer(job, model, tokenizer, arguments, train_data, eval_data, callbacks) -> transformers.Trainer
                                               in each worker: the stage's objective

The engine (slm/engine.py) runs any recipe through these three and knows no stage by name.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from typing import Any, Protocol

from slm import layout
from slm.chat import check_tokenizer_for_chat
from slm.config import PipelineConfig, StageConfig, TrainSpec
from slm.datasets import Manifest, read_manifest
from slm.ds_config import load_ds_config
from slm.engine import TrainJob, check_train_extra
from slm.errors import UserError
from slm.init_checks import check_architecture, check_vocab, check_weights
from slm.modeling import load_tokenizer, resolve_ref
from slm.packing import resolve_packing
from slm.padding import plan_pad
from slm.refs import WEIGHT_SUFFIX, ModelRef, StoreRef
from slm.store import Store


class Recipe(Protocol):
    def plan(self, cfg: StageConfig, ctx: StageContext) -> TrainJob: ...

    def examples(self, job: TrainJob, tokenizer, split: str) -> Any: ...

    def trainer(
        self, job: TrainJob, model, tokenizer, arguments: dict, train_data, eval_data, callbacks: list
    ) -> Any: ...


@dataclass
class StageContext:
    store: Store
    pipeline: PipelineConfig

    def resolve_init(self, cfg: StageConfig) -> ModelRef | None:
        if cfg.model.init == "scratch":
            return None
        ref = resolve_ref(cfg.model.init, self.store, what=f"{cfg.stage} model.init")
        config = self.init_config(ref)  # before the tokenizer: a broken config.json is named as such
        if cfg.model.architecture:
            check_architecture(cfg.model.architecture, config, f"{cfg.stage} model.init {cfg.model.init}")
        local = None
        if isinstance(ref, StoreRef):  # the init's files as its marker recorded them, then what they hold
            store = Store.open(ref.store)
            store.verify_in_place(ref.key, include=lambda rel: rel.endswith(WEIGHT_SUFFIX))
            local = store.local_path(ref.key)
        check_weights(local or ref.materialize(), f"{cfg.stage} model.init {cfg.model.init}")
        return ref

    def init_config(self, ref: ModelRef) -> dict:
        """The init's config.json (read from the store without fetching the weights when possible),
        checked for what the stage relies on: a JSON object with a model type transformers knows."""
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        if isinstance(ref, StoreRef):
            store = Store.open(ref.store)
            where = store.url(layout.model_config(ref.key))
            raw = store.read_bytes(layout.model_config(ref.key))
        else:
            file = ref.materialize() / "config.json"
            where = str(file)
            if not file.is_file():
                raise UserError(f"{file} not found: a model directory needs its config.json")
            raw = file.read_bytes()
        try:
            config = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise UserError(f"{where}: expected a JSON object")
        if config.get("model_type") not in CONFIG_MAPPING:
            raise UserError(
                f"{where}: model_type {config.get('model_type')!r} is not one transformers knows "
                f"(e.g. gpt2, llama, qwen2)"
            )
        if "vocab_size" not in config:
            raise UserError(f"{where}: no vocab_size")
        return config

    def tokenizer_ref(self, cfg: StageConfig, init: ModelRef | None) -> ModelRef:
        if init is None:
            return resolve_ref(cfg.model.tokenizer, self.store, what="tokenizer")
        if cfg.model.tokenizer:
            raise UserError(
                f"{cfg.stage}: model.tokenizer is only used with init: scratch "
                f"(a pretrained init brings its own tokenizer)"
            )
        return init

    def tokenizer(self, cfg: StageConfig, ref: ModelRef, init: ModelRef | None = None):
        tokenizer = load_tokenizer(ref.materialize(), cfg.model.trust_remote_code, cfg.model.chat_template)
        if init is not None:
            check_vocab(
                self.init_config(init)["vocab_size"], len(tokenizer), f"{cfg.stage} model.init {cfg.model.init}"
            )
        return tokenizer

    def chat_start(self, cfg: StageConfig, what: str) -> tuple[ModelRef, ModelRef, object, dict]:
        """A chat stage's start: its model reference, tokenizer reference, loaded tokenizer (which can chat)
        and the pad plan (slm/padding.py) its workers apply."""
        init = self.resolve_init(cfg)
        if init is None:
            raise UserError(f"{cfg.stage}: {what} starts from a model, not from scratch")
        tokenizer_ref = self.tokenizer_ref(cfg, init)
        tokenizer = self.tokenizer(cfg, tokenizer_ref, init)
        where = f"{cfg.stage} model {cfg.model.init}"
        check_tokenizer_for_chat(tokenizer, where)
        return init, tokenizer_ref, tokenizer, plan_pad(tokenizer, where)

    def dataset(self, cfg: StageConfig, needs_column: str) -> Manifest:
        manifest = read_manifest(self.store, cfg.data.dataset)
        columns = manifest.splits["train"].columns
        if needs_column not in columns:
            raise UserError(
                f"{cfg.stage}: dataset {cfg.data.dataset} has no `{needs_column}` column "
                f"(columns: {', '.join(columns)}); was it built by the {cfg.stage} builder?"
            )
        if cfg.data.eval_split and cfg.data.eval_split not in manifest.splits:
            raise UserError(
                f"{cfg.stage}: data.eval_split {cfg.data.eval_split!r} is not a split of "
                f"{cfg.data.dataset} (has {', '.join(manifest.splits)})"
            )
        return manifest

    def job(
        self,
        cfg: StageConfig,
        recipe: str,
        init: ModelRef | None,
        tokenizer: ModelRef,
        packable: bool = True,
        **fields,
    ) -> TrainJob:
        """The TrainJob every recipe starts from; `fields` are the recipe's own (logit_distill, dpo, warnings);
        `packable`: whether the recipe's examples can be packed (slm/packing.py)."""
        cluster = self.pipeline.cluster
        packing, packing_warning = self.packing(cfg, init, packable)
        ds_config = load_ds_config(cfg.deepspeed, cluster.use_gpu, cfg.train, cluster.workers)
        check_train_extra(cfg.train, f"stage {cfg.stage}")
        if (cfg.kl_anchor or fields.get("logit_distill")) and ds_config["zero_optimization"].get("stage") == 3:
            raise UserError(
                f"{cfg.stage}: kl_anchor / logit_distill keep a frozen full copy of a model on every "
                f"worker, which ZeRO-3 ({cfg.deepspeed}) would partition; use a ZeRO-2 config"
            )
        if cfg.train.ema and ds_config["zero_optimization"].get("stage") == 3:
            raise UserError(
                f"{cfg.stage}: train.ema reads the full weights on rank 0 after each step, which ZeRO-3 "
                f"({cfg.deepspeed}) partitions across ranks; use a ZeRO-2 config"
            )
        wandb_project = None
        if os.environ.get("WANDB_API_KEY"):
            if importlib.util.find_spec("wandb") is None:
                raise UserError("WANDB_API_KEY is set but the wandb package is not installed (pip install wandb)")
            wandb_project = os.environ.get("WANDB_PROJECT", self.pipeline.line)
        return TrainJob(
            stage=cfg.stage,
            recipe=recipe,
            run_id="",
            run_prefix="",
            store=self.store.uri,
            init=init,
            architecture=cfg.model.architecture,
            tokenizer=tokenizer,
            trust_remote_code=cfg.model.trust_remote_code,
            chat_template=cfg.model.chat_template,
            dataset=cfg.data.dataset,
            eval_split=cfg.data.eval_split,
            max_length=cfg.data.max_length,
            train=cfg.train,
            ds_config=ds_config,
            workers=cluster.workers,
            use_gpu=cluster.use_gpu,
            cpus_per_worker=cluster.cpus_per_worker,
            placement=cluster.placement,
            env=cluster.env,
            store_shared=cluster.store_shared,
            max_failures=cluster.max_failures,
            kl_anchor=cfg.kl_anchor,
            lora=cfg.lora,
            peak_tflops_per_worker=cluster.peak_tflops_per_worker,
            wandb_project=wandb_project,
            keep_optimizer_states=self.pipeline.keep_optimizer_states,
            background_upload=self.pipeline.background_upload,
            packing=packing,
            **{
                **fields,
                "warnings": [
                    *fields.get("warnings", []),
                    *schedule_warnings(cfg.train),
                    *([packing_warning] if packing_warning else []),
                ],
            },
        )

    def packing(self, cfg: StageConfig, init: ModelRef | None, packable: bool) -> tuple[bool, str | None]:
        if not packable:
            if cfg.train.packing:
                raise UserError(f"{cfg.stage}: train.packing is not supported by this stage (its batches are padded)")
            return False, None
        model_type = (self.init_config(init) if init is not None else cfg.model.architecture or {}).get("model_type")
        return resolve_packing(cfg.train.packing, model_type, cfg.model.trust_remote_code, cfg.stage)


def schedule_warnings(t: TrainSpec) -> list[str]:
    """What a schedule means when it is not what it looks like (a short smoke run over a file's warmup
    is legitimate, so it is said, not refused)."""
    out = []
    if t.max_steps > 0 and t.warmup_steps >= t.max_steps:
        out.append(
            f"warmup_steps {t.warmup_steps} is not below max_steps {t.max_steps}: the learning rate rises "
            f"for the whole run and never reaches train.lr {t.lr:g}"
        )
    if t.max_steps > 0 and "epochs" in t.model_fields_set:
        out.append(f"epochs {t.epochs:g} is set but max_steps {t.max_steps} decides the run's length (it wins)")
    return out
