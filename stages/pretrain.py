"""Pretrain: next-token prediction on packed fixed-length blocks from a weighted mix of sources.

Checks   starts from scratch (an architecture mapping plus a tokenizer) or from a checkpoint; the
         dataset's blocks were packed with this stage's tokenizer and fit `data.max_length`; warns
         when the plan is far below ~20 tokens per parameter (compute-optimal training).
Examples the pretrain builder's `input_ids` blocks; every token is a label.
Objective causal-LM cross-entropy (the HF Trainer's own loss).
Defaults stages/configs/pretrain.yaml (GPT-2 shape, cosine schedule, ZeRO-2).
"""

from transformers import AutoConfig, TrainingArguments

from slm.errors import UserError
from slm.examples import collator, packed_blocks
from slm.init_checks import count_parameters, tokens_per_parameter_warning
from slm.modeling import scratch_config, tokenizer_digest
from slm.objectives import StageTrainer
from slm.recipe import StageContext


def plan(cfg, ctx: StageContext):
    init = ctx.resolve_init(cfg)
    tokenizer_ref = ctx.tokenizer_ref(cfg, init)
    tokenizer = ctx.tokenizer(cfg, tokenizer_ref, init)
    if init is None:
        model_config = scratch_config(cfg.model.architecture, tokenizer, cfg.data.max_length)  # rejects unknown keys
    else:
        model_config = AutoConfig.from_pretrained(
            str(init.materialize()), trust_remote_code=cfg.model.trust_remote_code
        )

    manifest = ctx.dataset(cfg, needs_column="input_ids")
    if (manifest.block_size or 0) > cfg.data.max_length:
        raise UserError(
            f"pretrain: dataset blocks are {manifest.block_size} tokens but data.max_length is "
            f"{cfg.data.max_length}; rebuild the data or raise max_length"
        )
    if manifest.tokenizer_sha256 != tokenizer_digest(tokenizer_ref.materialize()):
        raise UserError(
            f"pretrain: dataset {cfg.data.dataset} was tokenized with {manifest.tokenizer}, "
            f"not with this stage's tokenizer ({tokenizer_ref.spec})"
        )

    t, workers = cfg.train, ctx.pipeline.cluster.workers
    if t.max_steps > 0:
        planned = t.max_steps * t.micro_batch * t.grad_accum * workers * cfg.data.max_length
    else:
        planned = int(t.epochs * (manifest.tokens or 0))
    warning = tokens_per_parameter_warning(planned, count_parameters(model_config))
    return ctx.job(cfg, __name__, init, tokenizer_ref, warnings=[warning] if warning else [])


def examples(job, tokenizer, split: str):
    return packed_blocks(job, tokenizer, split)


def trainer(job, model, tokenizer, arguments: dict, train_data, eval_data, callbacks):
    return StageTrainer(
        model=model,
        args=TrainingArguments(**arguments),
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=collator(job, tokenizer),
        processing_class=tokenizer,
        callbacks=callbacks,
        loss=job.train.loss,
    )
