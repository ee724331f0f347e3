"""How a stage's rows become training examples: the building blocks recipes share.

Token ids and labels are built in memory on each rank, as plain lists of examples (the Trainer takes
any sized sequence): small per-rank work for the datasets this project ships, and no fingerprint
hashing by `datasets` (which dumps bytecode into Ray's forwarded worker logs).
"""
from __future__ import annotations

from slm.chat import IGNORE_INDEX, encode_chat
from slm.datasets import load_split
from slm.errors import UserError
from slm.store import Store


def stage_rows(job, split: str, columns: list[str]):
    """One split of the job's dataset, checked for the columns the recipe reads."""
    data = load_split(Store.open(job.store), job.dataset, split)
    missing = sorted(set(columns) - set(data.column_names))
    if missing:
        raise UserError(f"dataset {job.dataset} ({split}): the {job.stage} stage needs the column(s) "
                        f"{', '.join(missing)} (has {', '.join(data.column_names)})")
    return data


def packed_blocks(job, split: str):
    """Fixed-length token blocks (packed by the pretrain builder), predicting every token."""
    blocks = [ids[: job.max_length] for ids in stage_rows(job, split, ["input_ids"])["input_ids"]]
    return [{"input_ids": block, "labels": block} for block in blocks]


def supervised_chat(job, tokenizer, split: str):
    """Conversations through the chat template, labels on assistant tokens only (slm/chat.py)."""
    conversations = stage_rows(job, split, ["messages"])["messages"]
    encoded = [encode_chat(tokenizer, messages, job.max_length) for messages in conversations]
    kept = [e for e in encoded if any(label != IGNORE_INDEX for label in e["labels"])]
    if not kept:
        raise UserError(f"dataset {job.dataset} ({split}): no example keeps an assistant token "
                        f"within max_length {job.max_length}")
    return kept


def padding_collator(tokenizer):
    """Pads input ids with the pad token and labels with the ignore index."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
