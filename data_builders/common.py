"""Reading builder inputs and splitting chat rows; shared by the chat-style builders."""
from __future__ import annotations

import random

from slm.config import BuilderConfig, resolve_path
from slm.datasets import load_split, read_manifest, write_dataset
from slm.errors import UserError
from slm.jsonl import read_objects
from slm.store import Store, sha256_file

ROLES = {"system", "user", "assistant"}


def read_jsonl(path: str) -> list[tuple[int, dict]]:
    return read_objects(resolve_path(path))


def to_messages(row: dict, where: str) -> list[dict]:
    """Accept {messages: [...]}, {prompt, response} or {question, answer}; return chat messages."""
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise UserError(f"{where}: `messages` must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise UserError(f"{where}: each message needs role (system/user/assistant) and string content")
        if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            raise UserError(f"{where}: no non-empty assistant message")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    for q, a in (("prompt", "response"), ("question", "answer")):
        if q in row and a in row:
            for key in (q, a):
                if not isinstance(row[key], str) or not row[key].strip():
                    raise UserError(f"{where}: `{key}` must be a non-empty string (got {type(row[key]).__name__})")
            return [{"role": "user", "content": row[q]}, {"role": "assistant", "content": row[a]}]
    raise UserError(f"{where}: expected `messages`, `prompt`/`response` or `question`/`answer`")


def source_rows(item, store: Store) -> tuple[list[dict], dict]:
    """One input's chat rows (a file, or a store dataset's train split) and its provenance entry."""
    if item.dataset is not None:
        messages = load_split(store, item.dataset, "train")["messages"]
        info = {"dataset": item.dataset, "build_digest": read_manifest(store, item.dataset).get("build_digest")}
        return [{"messages": m, "source": item.label} for m in messages], info
    path = resolve_path(item.path)
    rows = [{"messages": to_messages(row, f"{path}:{n}"), "source": item.label} for n, row in read_jsonl(item.path)]
    return rows, {"path": item.path, "sha256": sha256_file(path)}


def weighted_rows(cfg: BuilderConfig, rng: random.Random, store: Store) -> tuple[list[dict], list[dict]]:
    """Read every input; a source's weight scales its row count (2.0 repeats each row twice)."""
    rows, sources = [], []
    for item in cfg.inputs:
        found, info = source_rows(item, store)
        whole, frac = int(item.weight), item.weight - int(item.weight)
        picked = found * whole + rng.sample(found, round(frac * len(found)))
        rows += picked
        sources.append({"name": item.label, **info, "weight": item.weight, "rows_in": len(found),
                        "rows_out": len(picked)})
    return rows, sources


def split_and_write(cfg: BuilderConfig, store: Store, rows: list[dict], sources: list[dict], version: str,
                    digest: str, extra: dict | None = None) -> dict:
    rng = random.Random(cfg.seed)
    rng.shuffle(rows)
    n_val = round(len(rows) * cfg.validation_fraction)
    splits = {"train": rows[n_val:]}
    if n_val:
        splits["validation"] = rows[:n_val]
    return write_dataset(store, cfg.output, splits, builder=cfg.builder, version=version,
                         num_shards=cfg.num_shards, sources=sources, extra={"seed": cfg.seed, "build_digest": digest, **(extra or {})})


def build_chat(cfg: BuilderConfig, store: Store, version: str, digest: str) -> dict:
    rows, sources = weighted_rows(cfg, random.Random(cfg.seed), store)
    return split_and_write(cfg, store, rows, sources, version, digest)
