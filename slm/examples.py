"""How a stage's rows become training examples: the building blocks recipes share.

Rows stay memory-mapped Arrow (slm/datasets.py `load_split`). Token ids and labels are written by
`datasets.map` to an Arrow cache file on the node, once per node (the first rank there takes a file
lock, the others then map the finished file), so a rank's memory does not grow with the split: the
Trainer's distributed sampler reads each rank's share of rows from the mapped file. Every map gets
an explicit fingerprint (the run id and split): `datasets` would otherwise hash the map function
through dill, and its bytecode dump would land in Ray's forwarded worker logs.
"""

from __future__ import annotations

import hashlib
import time

from slm.chat import IGNORE_INDEX, encode_chat
from slm.datasets import load_split
from slm.errors import UserError
from slm.log import log
from slm.packing import document_lengths, pack_examples, packed_collator
from slm.store import Store


def stage_rows(job, split: str, columns: list[str]):
    """One split of the job's dataset, checked for the columns the recipe reads."""
    data = load_split(Store.open(job.store), job.dataset, split)
    missing = sorted(set(columns) - set(data.column_names))
    if missing:
        raise UserError(
            f"dataset {job.dataset} ({split}): the {job.stage} stage needs the column(s) "
            f"{', '.join(missing)} (has {', '.join(data.column_names)})"
        )
    return data


def mapped(job, data, split: str, what: str, fn, **kwargs):
    """`data.map(fn)` cached on the node under a name made of the run, split and step (see above)."""
    return cached(job, data, split, what, lambda cache: data.map(fn, **cache, **kwargs))


def cached(job, data, split: str, what: str, make, parallel: bool = True):
    """`make(cache)` — a `datasets.map` given `cache`'s file name, fingerprint and processes — once per
    node, under a name made of the run, split and step (see above); `parallel=False`: one process."""
    from filelock import FileLock

    from slm.store import cache_dir

    name = f"{job.run_id or 'run'}-{split}-{what}-{data._fingerprint}"
    path = cache_dir() / "examples" / f"{name}.arrow"
    path.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = hashlib.sha256(name.encode()).hexdigest()[:32]  # datasets allows at most 64 characters
    with FileLock(str(path) + ".lock"):
        if path.is_file():  # another rank of this node made it
            from datasets import Dataset

            return Dataset.from_file(str(path))
        processes = map_processes(len(data)) if parallel else None
        # Made in parallel, the cache is one file per process, which `map` itself finds and reads back.
        fresh = not any(path.parent.glob(f"{path.stem}_*_of_*{path.suffix}"))
        start = time.perf_counter()
        if fresh:
            log(
                f"[{job.stage}] preparing {len(data):,} {split} rows ({what}) on this node, "
                f"{processes or 1} process(es); once per node, cached for restarts"
            )
        out = make({"cache_file_name": str(path), "new_fingerprint": fingerprint, "num_proc": processes})
        if fresh:
            seconds = time.perf_counter() - start
            log(
                f"[{job.stage}] {len(data):,} {split} rows prepared in {seconds:.1f}s "
                f"({len(data) / max(seconds, 1e-9):,.0f} rows/s)"
            )
        return out


def map_processes(rows: int) -> int | None:
    """Processes for the one-time tokenization on a node: the node's cores (at most 8) once a split is
    big enough to repay starting them (SLM_MAP_PROCESSES sets it)."""
    import os

    if "SLM_MAP_PROCESSES" in os.environ:
        n = int(os.environ["SLM_MAP_PROCESSES"])
    else:
        n = min(8, os.cpu_count() or 1) if rows >= PARALLEL_MAP_ROWS else 1
    return n if n > 1 else None


PARALLEL_MAP_ROWS = 50_000


def packed_blocks(job, tokenizer, split: str):
    """Fixed-length token blocks (packed by the pretrain builder), predicting every token; with
    packing, each block's documents are its segments (slm/packing.py)."""
    data = stage_rows(job, split, ["input_ids"])
    length, eos = job.max_length, tokenizer.eos_token_id
    if job.packing and eos is None:
        raise UserError(f"{job.stage}: train.packing finds documents by their eos, and the tokenizer has none")

    def blocks(batch):
        ids = [row[:length] for row in batch["input_ids"]]
        out = {"input_ids": ids, "labels": ids}
        if job.packing:
            out["seq_lengths"] = [document_lengths(row, eos) for row in ids]
        return out

    what = f"blocks{length}" + ("-docs" if job.packing else "")
    return mapped(job, data, split, what, blocks, batched=True, remove_columns=data.column_names)


def supervised_chat(job, tokenizer, split: str):
    """Conversations through the chat template, labels on assistant tokens only (slm/chat.py);
    conversations that keep no assistant token within max_length are left out."""
    data = stage_rows(job, split, ["messages"])

    def encode(batch):
        out = {"input_ids": [], "labels": []}
        for messages in batch["messages"]:
            example = encode_chat(tokenizer, messages, job.max_length)
            if any(label != IGNORE_INDEX for label in example["labels"]):
                out["input_ids"].append(example["input_ids"])
                out["labels"].append(example["labels"])
        return out

    kept = mapped(job, data, split, f"chat{job.max_length}", encode, batched=True, remove_columns=data.column_names)
    if not len(kept):
        raise UserError(
            f"dataset {job.dataset} ({split}): no example keeps an assistant token within max_length {job.max_length}"
        )
    if not job.packing:
        return kept
    return cached(
        job,
        kept,
        split,
        f"pack{job.max_length}",
        # one process, always: TRL packs each process's slice on its own, so the rows would depend on a
        # node's core count, and ranks on nodes of different sizes would read different datasets
        lambda cache: pack_examples(kept, job.max_length, cache),
        parallel=False,
    )


def collator(job, tokenizer):
    """Packed rows flattened padding-free (slm/packing.py), or examples padded to the batch's longest."""
    if job.packing:
        return packed_collator(tokenizer, job.train.attn_implementation)
    return padding_collator(tokenizer)


def padding_collator(tokenizer):
    """Pads input ids with the pad token and labels with the ignore index."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
