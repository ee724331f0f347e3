"""Packing (`train.packing`): several examples per row, attention never crossing them.

Chat stages: the encoded conversations are packed by best-fit decreasing into rows of at most
`max_length` tokens (TRL's `pack_dataset`, strategy "bfd": no conversation is cut), once per node
like every other example map, so the distributed sampler and a resume's data position work on
packed rows exactly as they did on conversations. Pretraining: each fixed block's documents (joined
by eos in the builder) become its segments. Either way a row carries `seq_lengths`, and the
collator gives the model `position_ids` that restart at every segment (with flash attention, TRL's
padding-free collator flattens the micro-batch into one such sequence; with sdpa or eager the rows
stay rows, `PackedRows`). transformers reads those restarts as a block-diagonal causal mask (sdpa and eager,
`masking_utils.find_packed_sequence_indices`) or as flash-attention's varlen boundaries
(`cu_seq_lens_*`, which the collator also returns), so no token attends to another example, and
the label of each segment's first token is dropped, so no example predicts the next one's start.
Labels stay where the examples put them (assistant tokens only in chat stages).

Packing needs a model whose modeling code builds its mask through transformers' `masking_utils`
(GPT-2, Llama, Qwen2, Mistral, Gemma, Phi-3, ...): `train.packing` left unset turns it on for those
and off otherwise (said in the plan's warnings); `true` on any other model is refused. tests/slm/
test_packing.py checks every example's loss and the gradients against the unpacked examples.
"""

from __future__ import annotations

import importlib

import torch

from slm.chat import IGNORE_INDEX
from slm.errors import UserError

# What a training batch hands the model's forward (labels aside): the padded form's attention mask,
# the packed form's position ids and flash-attention boundaries.
MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "position_ids",
    "cu_seq_lens_q",
    "cu_seq_lens_k",
    "max_length_q",
    "max_length_k",
)


def forward_inputs(batch: dict) -> dict:
    """A batch's model inputs for a training-time forward pass. Never with a KV cache: transformers
    builds the packed mask only when there is none, and a model's config defaults to use_cache=True
    (TRL's SFTTrainer turns it off for the same reason)."""
    return {**{k: batch[k] for k in MODEL_INPUTS if k in batch}, "use_cache": False}


def packing_unsupported(model_type: str | None, trust_remote_code: bool) -> str | None:
    """Why a model cannot train packed (None when it can): its mask must come from masking_utils,
    which is what turns restarting position ids into per-example attention."""
    if not model_type:
        return "the model's type is not known before it is built"
    if trust_remote_code:
        return "its modeling code is the checkpoint's own (trust_remote_code), whose masking is unknown"
    try:
        module = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    except ImportError:
        return f"transformers has no modeling_{model_type} module to check"
    if not hasattr(module, "create_causal_mask"):
        return f"{model_type}'s attention mask is not built by transformers' masking_utils"
    return None


def resolve_packing(
    asked: bool | None, model_type: str | None, trust_remote_code: bool, where: str
) -> tuple[bool, str | None]:
    """(packing on?, a warning to record): unset means on wherever the model supports it."""
    if asked is False:
        return False, None
    reason = packing_unsupported(model_type, trust_remote_code)
    if reason is None:
        return True, None
    if asked:
        raise UserError(f"{where}: train.packing true is not supported for this model: {reason}; set it false")
    return False, f"packing is off (train.packing unset): {reason}; batches are padded"


def pack_examples(data, max_length: int, cache: dict):
    """Encoded examples (`input_ids`, `labels`) packed into rows of at most max_length tokens, with
    `seq_lengths`; `cache` holds `datasets.map`'s cache arguments."""
    from trl import pack_dataset

    return pack_dataset(data, max_length, strategy="bfd", map_kwargs=cache)


def document_lengths(ids: list[int], eos: int) -> list[int]:
    """The lengths of a pretraining block's documents: each ends after its eos (the last may be cut)."""
    lengths, start = [], 0
    for i, token in enumerate(ids):
        if token == eos:
            lengths.append(i + 1 - start)
            start = i + 1
    if start < len(ids):
        lengths.append(len(ids) - start)
    return lengths


def packed_collator(tokenizer, attn_implementation: str | None):
    """Flash attention: TRL's padding-free collator (the micro-batch flattened into one row with varlen
    boundaries, which flash attention needs at batch size 1). sdpa and eager: `PackedRows`, since one
    flattened row would make their attention quadratic in the micro-batch's tokens."""
    if attn_implementation and attn_implementation.startswith("flash_attention"):
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    return PackedRows(tokenizer.pad_token_id)


class PackedRows:
    """Packed rows stacked as they are, each padded to the longest: position ids restart at every
    segment and at the padding (its own segment, unlabelled), labels are dropped at each segment's
    first token, and no attention mask is returned, so transformers masks by segment. (TRL's collator
    returns an attention mask whenever it does not flatten, which turns that masking off.)"""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        width = max(len(row["input_ids"]) for row in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[i, :n] = torch.as_tensor(row["input_ids"])
            labels[i, :n] = torch.as_tensor(row["labels"])
            at = 0
            for length in [*row["seq_lengths"], width - n]:
                positions[i, at : at + length] = torch.arange(length)
                at += length
        labels[positions == 0] = IGNORE_INDEX
        return {"input_ids": ids, "labels": labels, "position_ids": positions}


def packing_stats(data, max_length: int) -> dict:
    """Rows, examples and the share of row capacity holding tokens, for logs and the run record."""
    import pyarrow.compute as pc

    lengths = data.data.column("seq_lengths")  # the memory-mapped column, not the rows
    examples = int(pc.sum(pc.list_value_length(lengths)).as_py() or 0)
    tokens = int(pc.sum(pc.list_flatten(lengths)).as_py() or 0)
    rows = len(data)
    return {"rows": rows, "examples": examples, "tokens": tokens, "fill": round(tokens / max(rows * max_length, 1), 4)}
