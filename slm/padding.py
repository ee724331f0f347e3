"""Which token pads a batch, when the tokenizer has no pad token or pads with its eos.

Many released chat models ship pad == eos (SmolLM2: `<|im_end|>`) or no pad at all (Llama-3,
Mistral). Padding positions are masked out of attention and labels, so any token serves, but a pad
that is also eos is wrong wherever a library masks labels by the pad id (eos would never be
learned) and makes the saved tokenizer ambiguous. So pad is routed to a distinct token the
tokenizer already has, in this order:

  1. a token made for padding (`<|finetune_right_pad_id|>`, `<|pad|>`, `<pad>`, `[PAD]`, ...);
  2. a reserved/unused special token (`<|reserved_special_token_0|>`, `<unused0>`, ...);
  3. the unk token, when it is neither eos nor bos (SmolLM2: `<|endoftext|>`);
  4. a document-end token that is not eos, when eos is a chat end-of-turn (`<|endoftext|>`,
     `<|end_of_text|>`);
  5. otherwise a new `<|pad|>` token, with the embeddings grown to hold it (tied weights stay tied).

eos is never changed. The plan is made once in the driver, recorded in the run record and the card,
and applied in every worker (`apply_pad`), so all ranks and the saved checkpoints agree.
transformers has no such routing (it leaves pad unset, or warns and uses eos in generate), so it is
written here.
"""

from __future__ import annotations

import re
from typing import Literal

from slm.errors import UserError
from slm.records import Stored

PAD_NAMES = ("<|finetune_right_pad_id|>", "<|pad|>", "<pad>", "[PAD]", "<|padding|>", "<|PAD_TOKEN|>")
RESERVED = re.compile(r"^<\|?(reserved_special_token_\d+|reserved_\d+|unused_?\d+|extra_id_\d+)\|?>$")
DOCUMENT_END = ("<|endoftext|>", "<|end_of_text|>", "</s>")
NEW_PAD = "<|pad|>"


class PadPlan(Stored):
    """The pad token a chat stage trains with: planned once in the driver, applied in every worker,
    kept in the run record (`pad`) and shown on the card."""

    content: str
    id: int
    how: Literal["kept", "routed", "added"]
    reason: str


def plan_pad(tokenizer, where: str) -> PadPlan:
    """{content, id, how: kept | routed | added, reason}: the pad token a chat stage trains with."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError(
            f"{where}: tokenizer has no eos token, so neither end of turn nor padding can be "
            f"routed; set eos_token in its tokenizer_config.json"
        )
    pad = tokenizer.pad_token_id
    if pad is not None and pad != eos:
        return PadPlan(content=tokenizer.pad_token, id=pad, how="kept", reason="the tokenizer's own pad token")
    before = (
        f"the tokenizer's pad token was its eos {tokenizer.eos_token!r}"
        if pad is not None
        else "the tokenizer has no pad token"
    )
    vocab = tokenizer.get_vocab()
    avoid = {eos, tokenizer.bos_token_id}
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}

    def usable(token: str | None) -> bool:
        return token is not None and token in vocab and vocab[token] not in avoid

    choices = (
        [(t, "a token made for padding") for t in PAD_NAMES]
        + [(t, "a reserved special token") for t in sorted(special, key=lambda t: vocab.get(t, 0)) if RESERVED.match(t)]
        + [(tokenizer.unk_token, "the unk token")]
        + [(t, "a document-end token distinct from the chat eos") for t in DOCUMENT_END]
    )
    for token, kind in choices:
        if usable(token):
            return PadPlan(content=token, id=vocab[token], how="routed", reason=f"{before}; routed to {kind}")
    return PadPlan(
        content=NEW_PAD,
        id=len(tokenizer),
        how="added",
        reason=f"{before} and no distinct unused token exists; added {NEW_PAD} and grew the embeddings",
    )


def apply_pad(tokenizer, plan: PadPlan | None) -> None:
    """Set the planned pad on a freshly loaded tokenizer (adds the token when the plan says so)."""
    if plan is None or plan.how == "kept":
        return
    if plan.how == "added":
        tokenizer.add_special_tokens({"pad_token": plan.content})
    else:
        tokenizer.pad_token = plan.content
    if tokenizer.pad_token_id != plan.id:
        raise UserError(
            f"pad token {plan.content!r} has id {tokenizer.pad_token_id} here but {plan.id} "
            f"when the run was planned: the tokenizer changed under the run"
        )


def fit_model_to_pad(model, plan: PadPlan | None):
    """Grow the embeddings when the pad was added beyond them (never shrink: Qwen2 keeps spare rows),
    and write the pad id into the model's config and generation config. Returns the model."""
    if plan is None:
        return model
    if plan.id >= model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(plan.id + 1)
    model.config.pad_token_id = plan.id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = plan.id
    return model
