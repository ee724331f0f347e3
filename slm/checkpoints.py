"""Storage hygiene for a run's checkpoints: DeepSpeed's resume state is pruned from all but the newest.

Every checkpoint keeps what the sweep and promotion read (HF weights, config, tokenizer, trainer
state). DeepSpeed's `global_step<N>/` folder (the ZeRO optimizer shards: fp32 master weights and
Adam moments, about 12 bytes a parameter, plus its own copy of the module) is only needed to resume,
and resuming starts from the newest complete checkpoint. So the newest `keep` checkpoints keep it
and older ones lose it; the checkpoint's `_COMPLETE.json` drops the files and says what was pruned,
so a pruned checkpoint stays a complete, verifiable tree and is never taken for a resumable one.
"""

from __future__ import annotations

import re

from slm import layout
from slm.records import now
from slm.store import Store

RESUME_STATE = re.compile(r"^global_step\d+/")


def resume_state_files(manifest: dict) -> dict:
    return {rel: info for rel, info in manifest["files"].items() if RESUME_STATE.match(rel)}


def holds_resume_state(manifest: dict) -> bool:
    """A checkpoint's marker says it can be resumed from: DeepSpeed's state is there, never pruned."""
    return bool(resume_state_files(manifest)) and "pruned" not in manifest


def resumable(store: Store, checkpoint: str) -> bool:
    return holds_resume_state(store.tree_manifest(checkpoint))


def prune_resume_state(store: Store, run: str, keep: int) -> list[dict]:
    """Delete DeepSpeed's resume state from every complete checkpoint of `run` but the newest `keep`.
    Returns what was pruned now, one entry per checkpoint (key, files, bytes)."""
    pruned = []
    for _, key in layout.complete_checkpoints(store, run)[: -keep or None]:
        manifest = store.tree_manifest(key)
        state = resume_state_files(manifest)
        if not state:
            continue
        # The marker is rewritten first: from then on no reader expects the files being deleted.
        kept = {rel: info for rel, info in manifest["files"].items() if rel not in state}
        entry = {"files": sorted(state), "bytes": sum(info["size"] for info in state.values()), "at": now()}
        store.mark_complete(key, kept, {k: v for k, v in manifest.items() if k != "files"} | {"pruned": entry})
        for rel in state:
            store.delete(layout.tree_file(key, rel))
        pruned.append({"checkpoint": key, **entry})
    return pruned
