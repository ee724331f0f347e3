"""DPO (optional stage): TRL's DPOTrainer on preference pairs, against the frozen starting model.

Users try it after SFT and often reject it (published lines report MMLU losses); run it as an
experiment (`--set experiment.name=...`) so a rejection stays on record and in the card.
"""
from slm.chat import check_tokenizer_for_chat
from slm.errors import UserError
from slm.recipe import StageContext


def plan(cfg, ctx: StageContext):
    init = ctx.resolve_init(cfg)
    if init is None:
        raise UserError("dpo: preference optimization starts from a model (usually the SFT champion), not from scratch")
    tokenizer_ref = ctx.tokenizer_ref(cfg, init)
    check_tokenizer_for_chat(ctx.tokenizer(cfg, tokenizer_ref, init), f"dpo model {cfg.model.init}")
    ctx.dataset(cfg, needs_column="chosen")
    return ctx.job(cfg, init, tokenizer_ref)
