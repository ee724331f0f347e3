"""Distill: the student is fine-tuned on a teacher's answers (sequence-level distillation).

The teacher ran in the distill data builder; its identity and decoding settings are in the
dataset manifest, which this recipe requires so that the card can name the teacher.
"""
from slm.chat import check_tokenizer_for_chat
from slm.errors import UserError
from slm.recipe import StageContext


def plan(cfg, ctx: StageContext):
    init = ctx.resolve_init(cfg)
    if init is None:
        raise UserError("distill: the student starts from a model, not from scratch")
    tokenizer_ref = ctx.tokenizer_ref(cfg, init)
    check_tokenizer_for_chat(ctx.tokenizer(cfg, tokenizer_ref, init), f"distill model {cfg.model.init}")
    manifest = ctx.dataset(cfg, needs_column="messages")
    if "teacher" not in manifest:
        raise UserError(f"distill: dataset {cfg.data.dataset} names no teacher; build it with the distill builder")
    return ctx.job(cfg, init, tokenizer_ref)
