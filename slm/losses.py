"""Causal-LM cross-entropy without the full-vocabulary logits in memory (`train.loss`).

At 0.1–2B parameters with 49k–152k vocabularies, the logits of a batch (and their gradient) are a
large share of activation memory: 8 × 1024 tokens × 151,936 vocabulary × 4 bytes is 5 GB before
the gradient. Both losses here project only the positions that carry a label (an SFT batch's
assistant tokens), never materialising the rest:

- `chunked` (plain torch, any device): those positions go through the LM head a chunk at a time,
  each chunk's logits recomputed in the backward pass (activation checkpointing) instead of kept;
- `liger`: Liger-Kernel's fused linear cross-entropy (a GPU kernel that never holds the logits).

Neither HF Trainer nor transformers' own loss does this (transformers' `logits_to_keep` keeps the
last positions only, which is right for generation, not for training), hence this module. The loss
equals the model's own (`ForCausalLMLoss`: float logits, labels shifted by one, ignore index -100,
sum over `num_items_in_batch` tokens or mean) to float tolerance; tests/slm/test_losses.py checks the
value and every parameter's gradient on GPT-2, Llama and Qwen2 shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from slm.errors import UserError
from slm.packing import forward_inputs

IGNORE = -100
# Positions projected at once: as many as keep one chunk's float logits near 64 MB (341 tokens at a
# 49,152 vocabulary, 110 at 151,936; at least 64), so a chunk and its gradient stay small beside the
# head's own gradient. Each chunk is still one large matmul (tokens × hidden × vocabulary).
CHUNK_LOGITS = 1 << 24
MIN_CHUNK_TOKENS = 64


def chunk_tokens_for(vocab: int) -> int:
    return max(MIN_CHUNK_TOKENS, CHUNK_LOGITS // vocab)


# Heads that do more than a plain projection (scaled or capped logits) would not match the model's loss.
UNSUPPORTED_CONFIG = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


def causal_lm_parts(model):
    """(backbone, lm_head) of a causal LM, through DeepSpeed's and PEFT's wrappers."""
    model = getattr(model, "module", model)  # DeepSpeedEngine
    if hasattr(model, "get_base_model"):  # PEFT
        model = model.get_base_model()
    for key in UNSUPPORTED_CONFIG:
        if getattr(model.config, key, None) not in (None, 1, 1.0):
            raise UserError(f"train.loss: {model.config.model_type}'s {key} is not a plain projection; use standard")
    return getattr(model, model.base_model_prefix), model.get_output_embeddings()


def _chunk_ce_sum(hidden, weight, bias, labels):
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, labels, reduction="sum")


def labelled_hidden(model, inputs) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    """The final hidden states that predict a label (shifted by one), the labels, and the LM head."""
    backbone, head = causal_lm_parts(model)
    hidden = backbone(**forward_inputs(inputs)).last_hidden_state
    labels = inputs["labels"][:, 1:]
    keep = labels != IGNORE
    return hidden[:, :-1][keep], labels[keep], head


def causal_lm_loss(model, inputs, kind: str, num_items_in_batch=None, chunk_tokens: int | None = None):
    """The next-token cross-entropy of `inputs` (with `labels`) by `kind` (chunked | liger)."""
    hidden, labels, head = labelled_hidden(model, inputs)
    if kind == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        total = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, reduction="sum")(
            head.weight, hidden, labels, head.bias
        )
    elif kind == "chunked":
        total = hidden.new_zeros((), dtype=torch.float32)
        chunk_tokens = chunk_tokens or chunk_tokens_for(head.weight.shape[0])
        for start in range(0, labels.numel(), chunk_tokens):
            end = start + chunk_tokens
            total = total + checkpoint(
                _chunk_ce_sum, hidden[start:end], head.weight, head.bias, labels[start:end], use_reentrant=False
            )
    else:
        raise ValueError(kind)
    if num_items_in_batch is not None:
        return total / num_items_in_batch
    return total / max(labels.numel(), 1)
