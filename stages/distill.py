"""Distill: the student is fine-tuned on a teacher's answers (sequence-level distillation).

The teacher ran in the distill data builder; its identity and decoding settings are in the
dataset manifest, which this recipe requires so that the card can name the teacher.
With `logit_distill`, the student also matches the teacher's full next-token distribution on those
answers (forward KL, temperature T); that needs the teacher's tokenizer to be the student's.
"""
from slm.errors import UserError
from slm.modeling import load_tokenizer, materialize, resolve_ref
from slm.recipe import StageContext


def plan(cfg, ctx: StageContext):
    init, tokenizer_ref, tokenizer = ctx.chat_start(cfg, "the student")
    manifest = ctx.dataset(cfg, needs_column="messages")
    if "teacher" not in manifest:
        raise UserError(f"distill: dataset {cfg.data.dataset} names no teacher; build it with the distill builder")
    logit_distill = None
    if cfg.logit_distill:
        teacher = resolve_ref(cfg.logit_distill.teacher, ctx.store, what="distill logit_distill.teacher")
        student_vocab = tokenizer.get_vocab()
        teacher_vocab = load_tokenizer(materialize(teacher), cfg.model.trust_remote_code).get_vocab()
        if teacher_vocab != student_vocab:
            raise UserError(f"distill: logit_distill.teacher {cfg.logit_distill.teacher} has a different tokenizer "
                            f"than the student ({len(teacher_vocab)} vs {len(student_vocab)} tokens); logit "
                            f"distillation needs one vocabulary — use the sequence-level default instead")
        sizes = ctx.init_config(teacher)["vocab_size"], ctx.init_config(init)["vocab_size"]
        if sizes[0] != sizes[1]:
            raise UserError(f"distill: logit_distill.teacher {cfg.logit_distill.teacher} has vocab_size {sizes[0]}, "
                            f"the student {sizes[1]}; their logits cannot be compared")
        logit_distill = {**cfg.logit_distill.model_dump(), "teacher": teacher}
    return ctx.job(cfg, init, tokenizer_ref, logit_distill)
