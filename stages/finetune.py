"""Chat fine-tuning — the sft, surgical and repair stages: loss on assistant tokens only.

The three stages differ by data, not by method: SFT on general instructions, surgical on format
discipline, repair on MCQ / concise facts / numeric blocks with a held-out validation split.

Checks   starts from a model (not scratch) whose tokenizer has eos and a chat template (a missing
         pad, or pad == eos, is routed: slm/padding.py); the dataset has a `messages` column (and the
         named eval split).
Examples each conversation rendered with the chat template; prompt tokens are masked (-100), the
         assistant's tokens (its end-of-turn included) are the labels; truncated to max_length.
Objective cross-entropy on the assistant tokens, plus `kl_anchor` (KL to the starting model) when set;
         `lora` trains an adapter instead of all weights (the engine applies it to any stage).
Defaults stages/configs/{sft,surgical,repair}.yaml.
"""

from transformers import TrainingArguments

from slm.examples import collator, supervised_chat
from slm.objectives import StageTrainer, kl_anchor_term
from slm.recipe import StageContext


def plan(cfg, ctx: StageContext):
    init, tokenizer_ref, _, pad = ctx.chat_start(cfg, "a fine-tuning stage")
    ctx.dataset(cfg, needs_column="messages")
    return ctx.job(cfg, __name__, init, tokenizer_ref, pad=pad)


def examples(job, tokenizer, split: str):
    return supervised_chat(job, tokenizer, split)


def trainer(job, model, tokenizer, arguments: dict, train_data, eval_data, callbacks):
    return StageTrainer(
        model=model,
        args=TrainingArguments(**arguments),
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=collator(job, tokenizer),
        processing_class=tokenizer,
        callbacks=callbacks,
        kl_terms=[kl_anchor_term(job)] if job.kl_anchor else [],
        loss=job.train.loss,
    )
