"""Promotion: copy a chosen candidate to `champions/<line>/<version>/`, then move `latest.json`.

The version directory holds the HF model files, SHA256SUMS, champion.json (provenance) and the
model card; its completion marker is written after all of them and `latest.json` after that, so
a reader following `latest.json` always finds a complete champion. Versions are never overwritten.
"""
from __future__ import annotations

import getpass
import json
import tempfile
from pathlib import Path

from slm.eval.scores import Candidate
from slm.eval.sweep import is_model_file
from slm.orchestration import card
from slm.orchestration.sweeping import sweep_note
from slm import layout, plots
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


def champion_plots(store: Store, line: str, info: dict, local: Path) -> dict:
    """plots/ of a new champion: the line's scores up to it (drawn now), its run's loss curve and its
    sweep's plot (copied). Returns {name: path relative to the champion}, for champion.json and the card."""
    infos = [store.read_json(layout.champion_info(layout.champion_dir(line, version)))
             for _, version in layout.versions(store, line)] + [info]
    points = [_point(i["version"], i["scores"]) for i in infos]
    start = _grown_from(store, infos[0])
    if start:
        points.insert(0, start)
    (local / "plots").mkdir()
    (local / "plots" / "history.png").write_bytes(plots.line_history(points, f"{line}: champions so far"))
    found = {"history": "plots/history.png"}
    run = info["run_record"].rsplit("/", 1)[0]
    for name, key in (("loss", f"{layout.train_dir(run)}/loss.png"),
                      ("selection", f"{info['selection'].rsplit('/', 1)[0]}/selection.png")):
        if store.exists(key):
            store.download_file(key, local / "plots" / f"{name}.png")
            found[name] = f"plots/{name}.png"
    return found


def _grown_from(store: Store, first: dict) -> dict | None:
    """The model a line grew from (its first champion's input, when that is no champion of the line), as
    the first sweep scored it: the chart then starts where the line started."""
    precursor = first.get("precursor") or {}
    if not precursor.get("spec") or not store.exists(first.get("selection", "")):
        return None
    rows = store.read_json(first["selection"])["candidates"]
    row = next((r for r in rows if r["kind"] == "precursor"), None)
    if row is None:
        return None
    return {"version": f"input: {precursor['spec'].rstrip('/').rsplit('/', 1)[-1]}", "mmlu": row["mmlu"],
            "mmlu_se": row.get("mmlu_se"), "bench": row.get("bench")}


def _point(version: str, scores: dict) -> dict:
    bench = scores.get("bench")
    return {"version": version, "mmlu": scores["mmlu"]["acc"], "mmlu_se": scores["mmlu"].get("se"),
            "bench": bench["score"] if bench else None}


def promote(store: Store, line: str, candidate: Candidate, champion_info: dict, card_writer,
            plots_writer=None) -> ChampionPointer:
    """candidate: a scored candidate (its key and weights digest are used); champion_info: provenance for
    champion.json.

    plots_writer(champion_info, local_dir) → {name: relative path} of the plots it wrote (champion_plots);
    card_writer(champion_info) → README.md text (called with the final champion.json content).
    Returns the latest.json pointer.
    """
    run_id = champion_info["run_id"]
    version = find_promoted(store, line, run_id, candidate.weights_digest)
    latest = (ChampionPointer.model_validate(store.read_json(layout.latest_pointer(line)))
              if store.exists(layout.latest_pointer(line)) else None)
    if version and latest and (latest.rollback or layout.version_number(latest.version) >= layout.version_number(version)):
        # Already promoted: `latest` moves forward only for a new version (or to finish a promotion that
        # stopped before moving it), never back, and never over a deliberate rollback.
        note = ("it is the line's latest" if latest.version == version
                else f"latest stays {line}@{latest.version}, rolled back on purpose: {latest.rollback['reason']}"
                if latest.rollback else f"latest stays {line}@{latest.version}, which is newer")
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
            if plots_writer:
                info["plots"] = plots_writer(info, local)
            (local / "champion.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
            (local / "README.md").write_text(card_writer(info))
            store.put_tree(local, key)
        log(f"[promote] {candidate.name} → {store.url(key)}")
    pointer = ChampionPointer(line=line, version=version, key=layout.champion_dir(line, version),
                              stage=champion_info["stage"], run_id=run_id, updated_at=now())
    store.write_json(layout.latest_pointer(line), pointer.to_json())  # last: readers only ever see complete champions
    return pointer


def rollback(store: Store, line: str, version: str, reason: str, write: bool = True) -> ChampionPointer:
    """Move `latest` back to an older complete version, on purpose: recorded with who, when and why in
    the line's history, on the pointer, and in the next card. write=False: every check, nothing written."""
    if not layout.VERSION.fullmatch(version):
        raise UserError(f"--rollback {version!r}: not a version name (v<N>-<stage>, e.g. v2-sft)")
    key = layout.champion_dir(line, version)
    if not store.is_complete(key):
        raise UserError(f"--rollback: champion {line}@{version} not found (or incomplete) at {store.url(key)}")
    if not store.exists(layout.latest_pointer(line)):
        raise UserError(f"--rollback: line {line!r} has no latest champion to move back from")
    latest = ChampionPointer.model_validate(store.read_json(layout.latest_pointer(line)))
    if latest.version == version:
        raise UserError(f"--rollback: {line}@{version} is already the line's latest")
    info = store.read_json(layout.champion_info(key))
    event = {"line": line, "from": latest.version, "to": version, "reason": reason, "by": getpass.getuser(),
             "at": now()}
    pointer = ChampionPointer(line=line, version=version, key=key, stage=info["stage"], run_id=info["run_id"],
                              updated_at=event["at"], rollback=event)
    if not write:
        return pointer
    store.write_json(f"{layout.line_history(line)}/{event['at'].replace(':', '')}-rollback.json", event)
    store.write_json(layout.latest_pointer(line), pointer.to_json())
    log(f"[promote] latest of {line} rolled back {latest.version} → {version}: {reason}")
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
            "precursor": (precursor.champion or {"key": precursor.key, "spec": precursor.spec}) if precursor else None,
            "scores": {"bench": None, **scores}, "sweep_note": sweep_note(pipeline, champion.scored.mmlu.n)}
    if champion.kind == "merge":
        info["merge"] = champion.merge
    if champion.manual:
        info["manual"] = champion.manual
    if record.get("experiment"):
        info["experiment"] = {k: record["experiment"][k] for k in ("name", "status", "reason")}
    return promote(store, pipeline.line, champion, info,
                   lambda final: card.render(store, final, pipeline.card.model_dump()),
                   lambda final, local: champion_plots(store, pipeline.line, final, local))
