"""Pretraining: documents from several weighted sources, tokenized and packed into fixed-length blocks.

Each source becomes one token stream (documents joined by eos). Blocks are drawn source by source
with probability proportional to the source weights; a source that runs out starts over (its
epochs are counted in the manifest), so weights are honoured as token proportions.
"""
import random

from slm.config import resolve_path
from slm.datasets import write_dataset
from slm.errors import UserError
from slm.modeling import load_tokenizer, materialize, resolve_ref, tokenizer_digest
from slm.store import sha256_file

VERSION = "1"


def build(cfg, store, digest):
    if not cfg.tokenizer or not cfg.block_size:
        raise UserError("pretrain builder: set tokenizer and block_size")
    tok_ref = resolve_ref(cfg.tokenizer, store, what="tokenizer")
    tok_dir = materialize(tok_ref)
    tokenizer = load_tokenizer(tok_dir)
    streams, sources = {}, []
    for item in cfg.inputs:
        name = item.name or resolve_path(item.path).stem
        docs = [d for d in resolve_path(item.path).read_text(encoding="utf-8").split("\n") if d.strip()]
        if not docs:
            raise UserError(f"pretrain builder: {resolve_path(item.path)} has no documents")
        ids = []
        for doc in docs:
            ids += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) < cfg.block_size:
            raise UserError(f"pretrain builder: source {name} has {len(ids)} tokens, fewer than one block")
        streams[name] = ids
        sources.append({"name": name, "path": item.path, "sha256": sha256_file(resolve_path(item.path)),
                        "weight": item.weight, "documents": len(docs), "tokens": len(ids)})
    total_blocks = sum(len(s) for s in streams.values()) // cfg.block_size
    rng = random.Random(cfg.seed)
    names = list(streams)
    weights = [s["weight"] for s in sources]
    cursor = {n: 0 for n in names}
    drawn = {n: 0 for n in names}
    rows = []
    for _ in range(total_blocks):
        name = rng.choices(names, weights)[0]
        stream, start = streams[name], cursor[name]
        block = [stream[(start + i) % len(stream)] for i in range(cfg.block_size)]
        cursor[name] = start + cfg.block_size
        drawn[name] += 1
        rows.append({"input_ids": block, "source": name})
    for s in sources:
        s["blocks"] = drawn[s["name"]]
        s["epochs"] = round(drawn[s["name"]] * cfg.block_size / s["tokens"], 3)
    rng.shuffle(rows)
    n_val = round(len(rows) * cfg.validation_fraction)
    splits = {"train": rows[n_val:], **({"validation": rows[:n_val]} if n_val else {})}
    return write_dataset(store, cfg.output, splits, builder="pretrain", version=VERSION, num_shards=cfg.num_shards,
                         sources=sources, extra={"seed": cfg.seed, "build_digest": digest, "block_size": cfg.block_size,
                                                 "tokenizer": tok_ref["spec"],
                                                 "tokenizer_sha256": tokenizer_digest(tok_dir), "tokens": total_blocks * cfg.block_size})
