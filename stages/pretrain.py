"""Pretrain: causal-LM loss on packed fixed-length blocks from a weighted mix of sources.

Starts from scratch (an architecture mapping plus a tokenizer) or from an existing checkpoint.
"""
from slm.errors import UserError
from slm.modeling import materialize, scratch_config, tokenizer_digest
from slm.recipe import StageContext


def plan(cfg, ctx: StageContext):
    init = ctx.resolve_init(cfg)
    tokenizer_ref = ctx.tokenizer_ref(cfg, init)
    tokenizer = ctx.tokenizer(cfg, tokenizer_ref, init)
    if init is None:
        scratch_config(cfg.model.architecture, tokenizer, cfg.data.max_length)  # rejects unknown keys now

    manifest = ctx.dataset(cfg, needs_column="input_ids")
    if manifest.get("block_size", 0) > cfg.data.max_length:
        raise UserError(f"pretrain: dataset blocks are {manifest['block_size']} tokens but data.max_length is "
                        f"{cfg.data.max_length}; rebuild the data or raise max_length")
    if manifest.get("tokenizer_sha256") != tokenizer_digest(materialize(tokenizer_ref)):
        raise UserError(f"pretrain: dataset {cfg.data.dataset} was tokenized with {manifest.get('tokenizer')}, "
                        f"not with this stage's tokenizer ({tokenizer_ref['spec']})")
    return ctx.job(cfg, init, tokenizer_ref)
