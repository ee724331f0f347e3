"""Promotion: copy a chosen candidate to `champions/<line>/<version>/`, then move `latest.json`.

The version directory holds the HF model files, SHA256SUMS, champion.json (provenance) and the
model card; its completion marker is written after all of them and `latest.json` after that, so
a reader following `latest.json` always finds a complete champion. Versions are never overwritten.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from eval.scores import Candidate
from eval.sweep import is_model_file
from orchestration import card
from orchestration.sweeping import sweep_note
from slm import layout
from slm.config import PipelineConfig
from slm.errors import UserError
from slm.log import log
from slm.records import ChampionPointer, now
from slm.store import Store, sha256_file


def find_promoted(store: Store, line: str, run_id: str, weights_digest: str) -> str | None:
    for _, version in layout.versions(store, line):
        info = store.read_json(layout.champion_info(layout.champion_dir(line, version)))
        if info.get("run_id") == run_id and info.get("weights_digest") == weights_digest:
            return version
    return None


def promote(store: Store, line: str, candidate: Candidate, champion_info: dict, card_writer) -> ChampionPointer:
    """candidate: a scored candidate (its key and weights digest are used); champion_info: provenance for
    champion.json.

    card_writer(champion_info) → README.md text (called with the final champion.json content).
    Returns the latest.json pointer.
    """
    run_id = champion_info["run_id"]
    version = find_promoted(store, line, run_id, candidate.weights_digest)
    latest = (ChampionPointer.model_validate(store.read_json(layout.latest_pointer(line)))
              if store.exists(layout.latest_pointer(line)) else None)
    if version and latest and layout.version_number(latest.version) >= layout.version_number(version):
        # Already promoted: `latest` only moves forward, never back to an older version by a re-promotion.
        note = ("it is the line's latest" if latest.version == version
                else f"latest stays {line}@{latest.version}, which is newer")
        log(f"[promote] {line}@{version} already holds these weights; not promoting twice ({note})")
        return ChampionPointer(line=line, version=version, key=layout.champion_dir(line, version),
                               stage=champion_info["stage"], run_id=run_id,
                               updated_at=latest.updated_at if latest.version == version else None)
    if version:
        log(f"[promote] {line}@{version} already holds these weights; not promoting twice")
    else:
        version = layout.next_version(store, line, champion_info["stage"])
        key = layout.champion_dir(line, version)
        if store.exists(key):
            raise UserError(f"refusing to overwrite existing champion directory {store.url(key)}")
        info = {**champion_info, "line": line, "version": version, "key": key, "source_key": candidate.key,
                "weights_digest": candidate.weights_digest, "promoted_at": now()}
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp)
            store.get_tree(candidate.key, local, include=is_model_file)
            sums = [f"{sha256_file(p)}  {p.name}" for p in sorted(local.iterdir()) if p.is_file()]
            (local / "SHA256SUMS").write_text("\n".join(sums) + "\n")
            (local / "champion.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
            (local / "README.md").write_text(card_writer(info))
            store.put_tree(local, key)
        log(f"[promote] {candidate.name} → {store.url(key)}")
    pointer = ChampionPointer(line=line, version=version, key=layout.champion_dir(line, version),
                              stage=champion_info["stage"], run_id=run_id, updated_at=now())
    store.write_json(layout.latest_pointer(line), pointer.to_json())  # last: readers only ever see complete champions
    return pointer


def promote_champion(pipeline: PipelineConfig, record: dict, champion: Candidate, precursor: Candidate | None,
                     store: Store) -> ChampionPointer:
    """Promote a swept candidate of a run, with its provenance and a card generated from the records."""
    scores = champion.scored.to_json()
    scores["mmlu"].pop("items", None)  # champion.json keeps the summary; per-item answers stay in the sweep
    if scores.get("bench"):
        scores["bench"].pop("items", None)
    info = {"stage": record["stage"], "run_id": record["run_id"], "candidate": champion.name,
            "candidate_kind": champion.kind, "run_record": layout.run_record(record["run_prefix"]),
            "selection": f"{layout.sweep_dir(record['run_prefix'])}/selection.json",
            "precursor": (precursor.champion or {"key": precursor.key}) if precursor else None,
            "scores": {"bench": None, **scores}, "sweep_note": sweep_note(pipeline, champion.scored.mmlu.n)}
    if champion.kind == "merge":
        info["merge"] = champion.merge
    if champion.manual:
        info["manual"] = champion.manual
    if record.get("experiment"):
        info["experiment"] = {k: record["experiment"][k] for k in ("name", "status", "reason")}
    return promote(store, pipeline.line, champion, info,
                   lambda final: card.render(store, final, pipeline.card.model_dump()))
