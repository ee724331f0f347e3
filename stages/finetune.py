"""Chat fine-tuning (the sft, surgical and repair stages): loss on assistant tokens only.

The stages differ by data, not by method: SFT on general instructions, surgical on format
discipline, repair on MCQ / concise facts / numeric blocks with a held-out validation split.
"""
from slm.chat import check_tokenizer_for_chat
from slm.errors import UserError
from slm.recipe import StageContext


def plan(cfg, ctx: StageContext):
    init = ctx.resolve_init(cfg)
    if init is None:
        raise UserError(f"{cfg.stage}: a fine-tuning stage starts from a model, not from scratch")
    tokenizer_ref = ctx.tokenizer_ref(cfg, init)
    check_tokenizer_for_chat(ctx.tokenizer(cfg, tokenizer_ref, init), f"{cfg.stage} model {cfg.model.init}")
    ctx.dataset(cfg, needs_column="messages")
    return ctx.job(cfg, init, tokenizer_ref)
