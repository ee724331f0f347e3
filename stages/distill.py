"""Distill: the student is fine-tuned on a teacher's answers (sequence-level distillation).

Checks   the student starts from a model whose tokenizer can chat; the dataset was built by the
         distill builder, whose manifest names the teacher and its decoding (the card shows them);
         with `logit_distill`, the teacher's vocabulary must be the student's, token for token.
Examples the teacher's answers as assistant turns, through the chat template, exactly as in SFT.
Objective cross-entropy on the answers; with `logit_distill` also forward KL(teacher ‖ student) at
         temperature T on those tokens: (1 − alpha) · CE + alpha · T² · KL. `kl_anchor` as in SFT.
Defaults stages/configs/distill.yaml.
"""

from transformers import TrainingArguments

from slm.engine import LogitDistillPlan
from slm.errors import UserError
from slm.examples import collator, supervised_chat
from slm.modeling import load_tokenizer, resolve_ref
from slm.objectives import StageTrainer, kl_anchor_term, logit_distill_term
from slm.recipe import StageContext


def plan(cfg, ctx: StageContext):
    init, tokenizer_ref, tokenizer, pad = ctx.chat_start(cfg, "the student")
    manifest = ctx.dataset(cfg, needs_column="messages")
    if manifest.teacher is None:
        raise UserError(f"distill: dataset {cfg.data.dataset} names no teacher; build it with the distill builder")
    logit_distill = None
    if cfg.logit_distill:
        teacher = resolve_ref(cfg.logit_distill.teacher, ctx.store, what="distill logit_distill.teacher")
        student_vocab = tokenizer.get_vocab()
        teacher_vocab = load_tokenizer(teacher.materialize(), cfg.model.trust_remote_code).get_vocab()
        if teacher_vocab != student_vocab:
            raise UserError(
                f"distill: logit_distill.teacher {cfg.logit_distill.teacher} has a different tokenizer "
                f"than the student ({len(teacher_vocab)} vs {len(student_vocab)} tokens); logit "
                f"distillation needs one vocabulary — use the sequence-level default instead"
            )
        sizes = ctx.init_config(teacher)["vocab_size"], ctx.init_config(init)["vocab_size"]
        if sizes[0] != sizes[1]:
            raise UserError(
                f"distill: logit_distill.teacher {cfg.logit_distill.teacher} has vocab_size {sizes[0]}, "
                f"the student {sizes[1]}; their logits cannot be compared"
            )
        if pad.how == "added":
            raise UserError(
                f"distill: the student needs a new pad token ({pad.reason}), which the teacher's "
                f"logits have no column for; give the student's tokenizer a pad token, or use the "
                f"sequence-level default instead of logit_distill"
            )
        logit_distill = LogitDistillPlan(**{**cfg.logit_distill.model_dump(), "teacher": teacher})
    return ctx.job(cfg, __name__, init, tokenizer_ref, pad=pad, logit_distill=logit_distill)


def examples(job, tokenizer, split: str):
    return supervised_chat(job, tokenizer, split)


def trainer(job, model, tokenizer, arguments: dict, train_data, eval_data, callbacks):
    terms = ([kl_anchor_term(job)] if job.kl_anchor else []) + ([logit_distill_term(job)] if job.logit_distill else [])
    return StageTrainer(
        model=model,
        args=TrainingArguments(**arguments),
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=collator(job, tokenizer),
        processing_class=tokenizer,
        callbacks=callbacks,
        kl_terms=terms,
        loss=job.train.loss,
    )
