"""Sharded datasets in the store: Parquet shards per split plus a manifest.

Layout under the dataset key:
    manifest.json                 builder, version, sources and weights, rows and sha256 per shard
    <split>/shard-00000.parquet   ...
    _COMPLETE.json                written last by Store.put_tree
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from slm import layout
from slm.config import HygieneSpec
from slm.errors import UserError
from slm.records import Stored, parse_record
from slm.store import Store, fetch_tree_cached, sha256_file


def write_dataset(
    store: Store,
    key: str,
    splits: dict[str, list[dict]],
    *,
    builder: str,
    version: str,
    num_shards: int,
    sources: list[dict],
    extra: dict | None = None,
) -> dict:
    """Shard each split's rows (row order kept, contiguous slices), upload, return the manifest."""

    def shards(rows):
        n = min(num_shards, len(rows))
        bounds = [round(i * len(rows) / n) for i in range(n + 1)]
        for i in range(n):
            yield pa.Table.from_pylist(rows[bounds[i] : bounds[i + 1]])

    return write_sharded(
        store,
        key,
        {split: shards(rows) for split, rows in splits.items() if rows},
        builder=builder,
        version=version,
        sources=sources,
        extra=extra,
    )


def shard_count(rows: int, num_shards: int, max_shard_rows: int) -> int:
    return max(min(num_shards, rows), -(-rows // max_shard_rows)) if rows else 0


def write_sharded(
    store: Store,
    key: str,
    splits: dict[str, Iterator[pa.Table]],
    *,
    builder: str,
    version: str,
    sources: list[dict],
    extra: dict | None = None,
) -> dict:
    """Write each split's shards as they come (one table in memory at a time), then upload the tree
    with its manifest (rows and sha256 per shard)."""
    manifest = {
        "builder": builder,
        "builder_version": version,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "sources": sources,
        "splits": {},
        **(extra or {}),
    }
    with tempfile.TemporaryDirectory() as tmp, _scratch_space(key, tmp):
        root = Path(tmp)
        for split, tables in splits.items():
            shards, columns = [], None
            for i, table in enumerate(tables):
                rel = layout.dataset_shard(split, i)
                (root / split).mkdir(exist_ok=True)
                pq.write_table(table, root / rel)
                columns = table.column_names
                shards.append({"file": rel, "rows": table.num_rows, "sha256": sha256_file(root / rel)})
            if shards:
                manifest["splits"][split] = {
                    "rows": sum(s["rows"] for s in shards),
                    "columns": columns,
                    "shards": shards,
                }
        if not manifest["splits"].get("train", {}).get("rows"):
            raise UserError(f"builder {builder}: the train split of {key} is empty")
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        store.delete_prefix(key)  # a rebuild replaces the old dataset as a whole
        store.put_tree(root, key)
    return manifest


@contextlib.contextmanager
def _scratch_space(key: str, tmp: str):
    """Shards are written to a scratch directory before they go to the store: a full scratch disk is
    named as such (with the way to move it), not as a bare temporary path."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise UserError(
            f"no space left on the device of the builder's scratch directory ({tmp}) writing {key}: set "
            "TMPDIR to a larger disk; the store is unchanged"
        ) from None


def read_manifest(store: Store, key: str) -> Manifest:
    if not store.is_complete(key):
        raise UserError(
            f"dataset {store.url(key)} not found (or incompletely written): build it first "
            f"with `python launch/build_data.py`"
        )
    raw = store.read_json(layout.dataset_manifest(key))
    if not raw["splits"].get("train", {}).get("rows"):
        raise UserError(f"dataset {store.url(key)} is empty: its train split has no rows")
    problem = manifest_mismatch(store.tree_manifest(key)["files"], raw)
    if problem:
        raise UserError(
            f"dataset {store.url(key)} is corrupted: {problem}; rebuild it (python launch/build_data.py CONFIG --force)"
        )
    return parse_record(Manifest, raw, store.url(layout.dataset_manifest(key)))


def dataset_identity(store: Store, key: str, manifest: Manifest | None = None) -> str:
    """What a store dataset holds: its build digest (or its manifest's checksum). `manifest`: the one
    already read (read_manifest), so it is not read twice."""
    manifest = manifest if manifest is not None else read_manifest(store, key)
    return manifest.build_digest or store.tree_manifest(key)["files"]["manifest.json"]["sha256"]


def manifest_mismatch(files: dict, manifest: dict) -> str | None:
    """Where the dataset's manifest and the files the store holds disagree (None: they agree).
    `files` is the store's completion record (path → sha256), written when the tree was uploaded."""
    for split, info in manifest["splits"].items():
        if sum(s["rows"] for s in info["shards"]) != info["rows"]:
            return f"split {split}: shard rows add up to {sum(s['rows'] for s in info['shards'])}, not {info['rows']}"
        for shard in info["shards"]:
            held = files.get(shard["file"])
            if held is None:
                return f"shard {shard['file']} is missing"
            if held["sha256"] != shard["sha256"]:
                return (
                    f"shard {shard['file']} has sha256 {held['sha256'][:12]}…, "
                    f"the manifest says {shard['sha256'][:12]}…"
                )
    return None


def verify_local_shards(local: Path, manifest: dict, where: str) -> None:
    """The fetched shards are the ones the manifest names: checksum and row count of every file."""
    for _split, info in manifest["splits"].items():
        for shard in info["shards"]:
            path = local / shard["file"]
            if sha256_file(path) != shard["sha256"]:
                raise UserError(f"dataset {where} is corrupted: {shard['file']} does not match its manifest checksum")
            rows = pq.read_metadata(path).num_rows
            if rows != shard["rows"]:
                raise UserError(
                    f"dataset {where} is corrupted: {shard['file']} has {rows} rows, its manifest says {shard['rows']}"
                )


def load_split(store: Store, key: str, split: str = "train"):
    """A split as a memory-mapped `datasets.Dataset`: fetched into the node-local cache once, each
    Parquet shard converted once (per node, under a lock) to an Arrow file that every rank maps.
    Pages are read as rows are used, so a rank holds its share of the rows, not the split."""
    from datasets import Dataset
    from datasets.table import MemoryMappedTable, concat_tables
    from filelock import FileLock

    manifest = read_manifest(store, key)
    if split not in manifest.splits:
        raise UserError(f"dataset {store.url(key)} has no split {split!r} (has {', '.join(manifest.splits)})")
    local = fetch_tree_cached(store, key)
    shards = manifest.splits[split].shards
    tables = []
    for shard in shards:
        arrow = local / f"{shard.file}.{shard.sha256[:12]}.arrow"
        with FileLock(str(arrow) + ".lock"):
            if not arrow.is_file():
                verify_local_shards(local, {"splits": {split: {"shards": [shard.to_json()]}}}, store.url(key))
                tmp = arrow.with_suffix(".tmp")
                parquet = pq.ParquetFile(local / shard.file)
                with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, parquet.schema_arrow) as writer:
                    for batch in parquet.iter_batches(batch_size=4096):  # a batch at a time
                        writer.write_batch(batch)
                tmp.rename(arrow)
        tables.append(MemoryMappedTable.from_file(str(arrow)))
    # The shards' checksums name the data: without a fingerprint, `datasets` hashes the whole table
    # through dill, which costs time and prints bytecode into Ray's forwarded worker logs.
    fingerprint = hashlib.sha256(json.dumps([s.sha256 for s in shards]).encode()).hexdigest()[:16]
    return Dataset(concat_tables(tables) if len(tables) > 1 else tables[0], fingerprint=f"{split}-{fingerprint}")


def iter_split(store: Store, key: str, split: str = "train") -> Iterator[dict]:
    """A dataset split's rows one at a time, shard by shard in record batches (bounded memory)."""
    manifest = read_manifest(store, key)
    if split not in manifest.splits:
        raise UserError(f"dataset {store.url(key)} has no split {split!r} (has {', '.join(manifest.splits)})")
    local = fetch_tree_cached(store, key)
    verify_local_shards(local, {"splits": {split: manifest.splits[split].to_json()}}, store.url(key))
    for shard in manifest.splits[split].shards:
        for batch in pq.ParquetFile(local / shard.file).iter_batches(batch_size=1024):
            yield from batch.to_pylist()


class Shard(Stored):
    file: str
    rows: int
    sha256: str


class Split(Stored):
    rows: int
    columns: list[str]
    shards: list[Shard]


class SourceStats(Stored):
    """One input of a build: where it came from (path / hf / dataset, with checksums), its weight and
    row format, and what the build kept of it; the last fields are what a builder adds (distill, pretrain)."""

    name: str
    path: str | None = None
    sha256: str | None = None
    files: list[dict[str, str]] | None = None
    hf: str | None = None
    config: str | None = None
    split: str | None = None
    revision: str | None = None
    dataset: str | None = None
    build_digest: str | None = None
    weight: float | None = None
    format: str | None = None
    rows_in: int | None = None
    rows_kept: int | None = None
    questions: int | None = None
    answered: int | None = None
    documents: int | None = None
    tokens: int | None = None
    blocks: int | None = None
    epochs: float | None = None
    rows_out: int | None = None
    answers_over_limit: int | None = Field(None, exclude_if=lambda v: v is None)  # dropped by max_answer_chars

    @property
    def size(self) -> int | None:
        """What the card shows for the source: tokens for pretraining, else rows out (or answered, read)."""
        return self.tokens or self.rows_out or self.answered or self.rows_in


class SourceHygiene(Stored):
    rows_in: int
    exact_duplicates: int
    near_duplicates: int
    contaminated: dict[str, int]
    kept: int
    samples: Any = None


class EvalSets(Stored):
    items: dict[str, int]
    sources: dict[str, str]
    digest: str
    too_short_to_match: int | None = None


class Hygiene(Stored):
    settings: HygieneSpec
    lsh: dict[str, Any] | None = None
    eval_sets: EvalSets | str  # a string says why nothing was checked against evaluation sets
    sources: dict[str, SourceHygiene]


class Manifest(Stored):
    """`datasets/<stage>/manifest.json`: what a builder wrote (the store's layout, unknown keys refused)."""

    builder: str
    builder_version: str
    created: str
    build_digest: str | None = None
    seed: int | None = None
    sources: list[SourceStats]
    splits: dict[str, Split]
    hygiene: Hygiene | None = None
    tokenizer: str | None = None
    tokenizer_sha256: str | None = None
    block_size: int | None = None
    tokens: int | None = None
    teacher: dict[str, Any] | None = None
    forms: dict[str, int] | None = None
