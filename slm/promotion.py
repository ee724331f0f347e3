"""Promotion: copy a chosen candidate to `champions/<line>/<version>/`, then move `latest.json`.

The version directory holds the HF model files, SHA256SUMS, champion.json (provenance) and the
model card; its completion marker is written after all of them and `latest.json` after that, so
a reader following `latest.json` always finds a complete champion. Versions are never overwritten.
"""
from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from slm.errors import UserError
from slm.records import now
from slm.store import Store, sha256_file


def existing_versions(store: Store, line: str) -> list[str]:
    return [v for v in store.children(f"champions/{line}") if store.is_complete(f"champions/{line}/{v}")]


def find_promoted(store: Store, line: str, run_id: str, weights_digest: str) -> str | None:
    for version in existing_versions(store, line):
        info = store.read_json(f"champions/{line}/{version}/champion.json")
        if info.get("run_id") == run_id and info.get("weights_digest") == weights_digest:
            return version
    return None


def next_version(store: Store, line: str, stage: str) -> str:
    numbers = [int(m.group(1)) for v in store.children(f"champions/{line}") if (m := re.match(r"v(\d+)-", v))]
    return f"v{max(numbers, default=0) + 1}-{stage}"


def promote(store: Store, line: str, candidate: dict, champion_info: dict, card_writer) -> dict:
    """candidate: {name, key, weights_digest}; champion_info: provenance for champion.json.

    card_writer(champion_info) → README.md text (called with the final champion.json content).
    Returns the latest.json pointer.
    """
    from eval.sweep import is_model_file

    run_id = champion_info["run_id"]
    version = find_promoted(store, line, run_id, candidate["weights_digest"])
    if version:
        print(f"[promote] {line}@{version} already holds these weights; not promoting twice",
              file=sys.stderr, flush=True)
    else:
        version = next_version(store, line, champion_info["stage"])
        key = f"champions/{line}/{version}"
        if store.exists(key):
            raise UserError(f"refusing to overwrite existing champion directory {store.url(key)}")
        info = {**champion_info, "line": line, "version": version, "key": key, "source_key": candidate["key"],
                "weights_digest": candidate["weights_digest"], "promoted_at": now()}
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp)
            store.get_tree(candidate["key"], local, include=is_model_file)
            sums = [f"{sha256_file(p)}  {p.name}" for p in sorted(local.iterdir()) if p.is_file()]
            (local / "SHA256SUMS").write_text("\n".join(sums) + "\n")
            import json

            (local / "champion.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
            (local / "README.md").write_text(card_writer(info))
            store.put_tree(local, key)
        print(f"[promote] {candidate['name']} → {store.url(key)}", file=sys.stderr, flush=True)
    pointer = {"line": line, "version": version, "key": f"champions/{line}/{version}",
               "stage": champion_info["stage"], "run_id": run_id, "updated_at": now()}
    store.write_json(f"champions/{line}/latest.json", pointer)  # last: readers only ever see complete champions
    return pointer
