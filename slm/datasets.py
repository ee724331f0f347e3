"""Sharded datasets in the store: Parquet shards per split plus a manifest.

Layout under the dataset key:
    manifest.json                 builder, version, sources and weights, rows and sha256 per shard
    <split>/shard-00000.parquet   ...
    _COMPLETE.json                written last by Store.put_tree
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from slm.errors import UserError
from slm.store import Store, fetch_tree_cached, sha256_file


def write_dataset(store: Store, key: str, splits: dict[str, list[dict]], *, builder: str, version: str,
                  num_shards: int, sources: list[dict], extra: dict | None = None) -> dict:
    """Shard each split's rows (row order kept, contiguous slices), upload, return the manifest."""
    if not splits.get("train"):
        raise UserError(f"builder {builder}: the train split of {key} is empty")
    manifest = {
        "builder": builder,
        "builder_version": version,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "sources": sources,
        "splits": {},
        **(extra or {}),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for split, rows in splits.items():
            if not rows:
                continue
            table = pa.Table.from_pylist(rows)
            n = min(num_shards, len(rows))
            bounds = [round(i * len(rows) / n) for i in range(n + 1)]
            shards = []
            for i in range(n):
                rel = f"{split}/shard-{i:05d}.parquet"
                (root / split).mkdir(exist_ok=True)
                pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]), root / rel)
                shards.append({"file": rel, "rows": bounds[i + 1] - bounds[i], "sha256": sha256_file(root / rel)})
            manifest["splits"][split] = {"rows": len(rows), "columns": table.column_names, "shards": shards}
        import json

        (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        store.delete_prefix(key)  # a rebuild replaces the old dataset as a whole
        store.put_tree(root, key)
    return manifest


def read_manifest(store: Store, key: str) -> dict:
    if not store.is_complete(key):
        raise UserError(f"dataset {store.url(key)} not found (or incompletely written): build it first "
                        f"with `python launch/build_data.py`")
    manifest = store.read_json(f"{key}/manifest.json")
    if not manifest["splits"].get("train", {}).get("rows"):
        raise UserError(f"dataset {store.url(key)} is empty: its train split has no rows")
    problem = manifest_mismatch(store.tree_manifest(key)["files"], manifest)
    if problem:
        raise UserError(f"dataset {store.url(key)} is corrupted: {problem}; rebuild it "
                        f"(python launch/build_data.py CONFIG --force)")
    return manifest


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
                return f"shard {shard['file']} has sha256 {held['sha256'][:12]}…, the manifest says {shard['sha256'][:12]}…"
    return None


def verify_local_shards(local: Path, manifest: dict, where: str) -> None:
    """The fetched shards are the ones the manifest names: checksum and row count of every file."""
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            path = local / shard["file"]
            if sha256_file(path) != shard["sha256"]:
                raise UserError(f"dataset {where} is corrupted: {shard['file']} does not match its manifest checksum")
            rows = pq.read_metadata(path).num_rows
            if rows != shard["rows"]:
                raise UserError(f"dataset {where} is corrupted: {shard['file']} has {rows} rows, its manifest says "
                                f"{shard['rows']}")


def load_split(store: Store, key: str, split: str = "train"):
    """Fetch a dataset into the node-local cache and return the split as a `datasets.Dataset`."""
    from datasets import Dataset

    manifest = read_manifest(store, key)
    if split not in manifest["splits"]:
        raise UserError(f"dataset {store.url(key)} has no split {split!r} (has {', '.join(manifest['splits'])})")
    local = fetch_tree_cached(store, key)
    verify_local_shards(local, {"splits": {split: manifest["splits"][split]}}, store.url(key))
    shards = manifest["splits"][split]["shards"]
    tables = [pq.read_table(local / s["file"]) for s in shards]
    # The shards' checksums name the data: without a fingerprint, `datasets` hashes the whole table
    # through dill, which costs time and prints bytecode into Ray's forwarded worker logs.
    fingerprint = hashlib.sha256(json.dumps([s.get("sha256") for s in shards]).encode()).hexdigest()[:16]
    return Dataset(pa.concat_tables(tables), fingerprint=f"{split}-{fingerprint}")
