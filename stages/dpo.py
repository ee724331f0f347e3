"""DPO (optional stage): TRL's DPOTrainer on preference pairs, against the frozen starting model.

Users try it after SFT and often reject it (published lines report MMLU losses); run it as an
experiment (`--set experiment.name=...`) so a rejection stays on record and in the card.
"""
from slm.recipe import StageContext


def plan(cfg, ctx: StageContext):
    init, tokenizer_ref, _ = ctx.chat_start(cfg, "preference optimization (usually on the SFT champion)")
    ctx.dataset(cfg, needs_column="chosen")
    return ctx.job(cfg, init, tokenizer_ref)
