"""Pretraining: documents from several weighted sources, tokenized and packed into fixed-length blocks.

Documents are deduplicated and decontaminated first (data_builders/common.py). Each source then
becomes one token stream (documents joined by eos) in a token file on local disk, tokenized in
batches. Blocks are drawn source by source with probability proportional to the source weights; a
source that runs out starts over (its epochs are counted in the manifest), so weights are honoured
as token proportions. The draw is a plan of (source, offset) pairs; shards are cut from the
memory-mapped token files one at a time, so memory does not grow with the corpus.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from slm.data_builders.common import Progress, collect
from slm.datasets import shard_count, write_sharded
from slm.errors import UserError
from slm.log import log
from slm.modeling import load_tokenizer, resolve_ref, tokenizer_digest

VERSION = "2"  # 2: any source kind; deduplicated and decontaminated; streamed to token files
TOKENIZE_BATCH = 1000


def token_streams(table, keep: np.ndarray, ranges, tokenizer, workdir: Path) -> list[np.ndarray]:
    """Each source's kept documents as one memory-mapped uint32 token stream."""
    streams = []
    progress = Progress("tokenizing", total=int(keep.sum()), unit="documents")
    for s, (start, end) in enumerate(ranges):
        path = workdir / f"tokens-{s}.bin"
        rows = start + np.nonzero(keep[start:end])[0]
        with open(path, "wb") as f:
            for i in range(0, len(rows), TOKENIZE_BATCH):
                docs = table.take(rows[i : i + TOKENIZE_BATCH]).column("text").to_pylist()
                for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
                    f.write(np.asarray(ids + [tokenizer.eos_token_id], dtype=np.uint32).tobytes())
                progress.tick(len(docs))
        size = path.stat().st_size // 4
        streams.append(np.memmap(path, dtype=np.uint32, mode="r", shape=(size,)) if size else np.zeros(0, np.uint32))
    return streams


def build(cfg, store, digest, evals=None, config_path=""):
    if not cfg.tokenizer or not cfg.block_size:
        raise UserError("pretrain builder: set tokenizer and block_size")
    tok_ref = resolve_ref(cfg.tokenizer, store, what="tokenizer")
    tok_dir = tok_ref.materialize()
    tokenizer = load_tokenizer(tok_dir)
    block = cfg.block_size
    with tempfile.TemporaryDirectory(prefix="slm-build-") as tmp:
        table, keep, sources, report = collect(cfg, store, evals, config_path, Path(tmp), wants="text")
        ranges = report.pop("ranges")
        streams = token_streams(table, keep, ranges, tokenizer, Path(tmp))
        for info, stream, (start, end) in zip(sources, streams, ranges):
            if len(stream) < block:
                raise UserError(
                    f"pretrain builder: source {info['name']} has {len(stream)} tokens after dedup and "
                    f"decontamination, fewer than one block ({block})"
                )
            info.update(documents=int(keep[start:end].sum()), tokens=int(len(stream)))
        total_blocks = sum(len(s) for s in streams) // block
        rng = np.random.default_rng(cfg.seed)
        weights = np.array([item.weight for item in cfg.inputs], dtype=float)
        plan_source = rng.choice(len(streams), size=total_blocks, p=weights / weights.sum())
        plan_offset = np.zeros(total_blocks, dtype=np.int64)
        for s, stream in enumerate(streams):
            drawn = np.nonzero(plan_source == s)[0]
            plan_offset[drawn] = (np.arange(len(drawn), dtype=np.int64) * block) % len(stream)
            sources[s].update(blocks=int(len(drawn)), epochs=round(len(drawn) * block / len(stream), 3))
        # A source drawn for more than one epoch repeats blocks: validation takes distinct (source,
        # offset) blocks, and every copy of a held-out block stays out of train.
        span_of = plan_source.astype(np.int64) * (1 << 40) + plan_offset
        spans, first = np.unique(span_of, return_index=True)
        pick = rng.permutation(len(spans))[: round(len(spans) * cfg.validation_fraction)]
        held_out = first[pick]
        order = rng.permutation(np.nonzero(~np.isin(span_of, spans[pick]))[0])
        splits = {"train": order, **({"validation": held_out} if len(held_out) else {})}
        names = [info["name"] for info in sources]

        def blocks(picked: np.ndarray):
            n = shard_count(len(picked), cfg.num_shards, cfg.max_shard_rows)
            bounds = [round(i * len(picked) / n) for i in range(n + 1)] if n else []
            for i in range(n):
                ids, labels = [], []
                for b in picked[bounds[i] : bounds[i + 1]]:
                    stream, offset = streams[plan_source[b]], plan_offset[b]
                    span = stream[offset : offset + block]
                    if len(span) < block:  # the stream starts over
                        span = np.concatenate([span, stream[: block - len(span)]])
                    ids.append(span.astype(np.int32))
                    labels.append(names[plan_source[b]])
                yield pa.table({"input_ids": pa.array(ids, type=pa.list_(pa.int32())), "source": labels})

        log(f"[data] {cfg.output}: {total_blocks:,} blocks of {block} tokens")
        return write_sharded(
            store,
            cfg.output,
            {name: blocks(idx) for name, idx in splits.items()},
            builder="pretrain",
            version=VERSION,
            sources=sources,
            extra={
                "seed": cfg.seed,
                "build_digest": digest,
                "block_size": block,
                "tokenizer": tok_ref.spec,
                "tokenizer_sha256": tokenizer_digest(tok_dir),
                "tokens": total_blocks * block,
                "hygiene": report,
            },
        )
