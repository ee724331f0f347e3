"""Chat fine-tuning (the sft, surgical and repair stages): loss on assistant tokens only.

The stages differ by data, not by method: SFT on general instructions, surgical on format
discipline, repair on MCQ / concise facts / numeric blocks with a held-out validation split.
"""
from slm.recipe import StageContext


def plan(cfg, ctx: StageContext):
    init, tokenizer_ref, _ = ctx.chat_start(cfg, "a fine-tuning stage")
    ctx.dataset(cfg, needs_column="messages")
    return ctx.job(cfg, init, tokenizer_ref)
