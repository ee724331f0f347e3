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

from slm import layout, plots
from slm.config import PipelineConfig
from slm.errors import UserError
from slm.eval.scores import Candidate, Selection
from slm.eval.sweep import is_model_file
from slm.log import log
from slm.orchestration import card
from slm.orchestration.lineage import ChampionInfo, ChampionScores, champions, read_champion
from slm.orchestration.sweeping import precursor_of, sweep_note
from slm.records import ChampionPointer, RollbackEvent, load_record, now, read_pointer, read_pointer_tagged
from slm.run_record import RunRecord
from slm.store import Store, sha256_file


def find_promoted(store: Store, line: str, run_id: str, weights_digest: str) -> str | None:
    for info in champions(store, line):
        if info.run_id == run_id and info.weights_digest == weights_digest:
            return info.version
    return None


def champion_plots(store: Store, line: str, info: ChampionInfo, local: Path) -> dict[str, str]:
    """plots/ of a new champion: the line's scores up to it (drawn now), its run's loss curve and its
    sweep's plot (copied). Returns {name: path relative to the champion}, for champion.json and the card."""
    infos = [*champions(store, line), info]
    points = [_point(i) for i in infos]
    start = _grown_from(store, infos[0])
    if start:
        points.insert(0, start)
    (local / "plots").mkdir()
    (local / layout.champion_plot("history")).write_bytes(plots.line_history(points, f"{line}: champions so far"))
    found = {"history": layout.champion_plot("history")}
    for name, key in (
        ("loss", layout.loss_plot(info.run)),
        ("selection", layout.selection_file(info.selection.rsplit("/", 1)[0], "png")),
    ):
        if store.exists(key):
            store.download_file(key, local / layout.champion_plot(name))
            found[name] = layout.champion_plot(name)
    return found


def _grown_from(store: Store, first: ChampionInfo) -> dict | None:
    """The model a line grew from (its first champion's input, when that is no champion of the line), as
    the first sweep scored it: the chart then starts where the line started."""
    if not first.precursor or not first.precursor.spec or not store.exists(first.selection):
        return None
    selection = load_record(store, first.selection, Selection)
    row = next((r for r in selection.candidates if r.kind == "precursor"), None)
    if row is None:
        return None
    name = first.precursor.spec.rstrip("/").rsplit("/", 1)[-1]
    return {"version": f"input: {name}", "mmlu": row.mmlu, "mmlu_se": row.mmlu_se, "bench": row.bench}


def _point(info: ChampionInfo) -> dict:
    mmlu, bench = info.scores.mmlu, info.scores.bench
    return {"version": info.version, "mmlu": mmlu.acc, "mmlu_se": mmlu.se, "bench": bench.score if bench else None}


def promote(
    store: Store, line: str, candidate: Candidate, champion_info: ChampionInfo, card_writer, plots_writer=None
) -> ChampionPointer:
    """candidate: a scored candidate (its key and weights digest are used); champion_info: provenance for
    champion.json.

    plots_writer(champion_info, local_dir) → {name: relative path} of the plots it wrote (champion_plots);
    card_writer(champion_info) → README.md text (called with the final champion.json content).
    Returns the latest.json pointer.
    """
    run_id, stage = champion_info.run_id, champion_info.stage
    version = find_promoted(store, line, run_id, candidate.weights_digest)
    latest = read_pointer(store, line)
    if (
        version
        and latest
        and (latest.rollback or layout.version_number(latest.version) >= layout.version_number(version))
    ):
        # Already promoted: `latest` moves forward only for a new version (or to finish a promotion that
        # stopped before moving it), never back, and never over a deliberate rollback.
        note = (
            "it is the line's latest"
            if latest.version == version
            else f"latest stays {line}@{latest.version}, rolled back on purpose: {latest.rollback.reason}"
            if latest.rollback
            else f"latest stays {line}@{latest.version}, which is newer"
        )
        log(f"[promote] {line}@{version} already holds these weights; not promoting twice ({note})")
        return ChampionPointer(
            line=line,
            version=version,
            key=layout.champion_dir(line, version),
            stage=stage,
            run_id=run_id,
            updated_at=latest.updated_at if latest.version == version else None,
        )
    if version:
        log(f"[promote] {line}@{version} already holds these weights; not promoting twice")
    else:
        version = claim_version(store, line, stage, run_id, candidate.name)
        key = layout.champion_dir(line, version)
        info = champion_info.model_copy(
            update={
                "line": line,
                "version": version,
                "key": key,
                "source_key": candidate.key,
                "weights_digest": candidate.weights_digest,
                "promoted_at": now(),
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp)
            store.get_tree(candidate.key, local, include=is_model_file)
            sums = [f"{sha256_file(p)}  {p.name}" for p in sorted(local.iterdir()) if p.is_file()]
            (local / "SHA256SUMS").write_text("\n".join(sums) + "\n")
            auto_map = json.loads((local / "config.json").read_text()).get("auto_map")
            if auto_map:
                info = info.model_copy(update={"custom_code": auto_map})
                log(
                    f"[promote] warning: {candidate.name}'s config.json names custom code (auto_map: "
                    f"{', '.join(auto_map)}); it was trained with transformers' own classes, trust_remote_code "
                    "off, and the card says so"
                )
            if plots_writer:
                info = info.model_copy(update={"plots": plots_writer(info, local)})
            (local / layout.CHAMPION_INFO).write_text(info.to_text())
            (local / "README.md").write_text(card_writer(info))
            store.put_tree(local, key)
        log(f"[promote] {candidate.name} → {store.url(key)}")
    pointer = ChampionPointer(
        line=line,
        version=version,
        key=layout.champion_dir(line, version),
        stage=stage,
        run_id=run_id,
        updated_at=now(),
    )
    return move_latest_forward(store, line, pointer)  # last: readers only ever see complete champions


CLAIM_TRIES = 100


def claim_version(store: Store, line: str, stage: str, run_id: str, candidate: str) -> str:
    """The next version, claimed by creating its claim file exclusively (a local hard link, an S3
    If-None-Match put): of two promotions at once, one gets v6 and the other v7, never both v6."""
    for _ in range(CLAIM_TRIES):
        version = layout.next_version(store, line, stage)
        claim = {"run_id": run_id, "candidate": candidate, "by": getpass.getuser(), "at": now()}
        if store.create_exclusive(layout.version_claim(line, version), (json.dumps(claim) + "\n").encode()):
            return version
        log(f"[promote] {line}@{version} was just claimed by another promotion; taking the next version")
    raise UserError(f"could not claim a version of {line} in {CLAIM_TRIES} tries ({store.url(layout.line_dir(line))})")


def move_latest_forward(store: Store, line: str, pointer: ChampionPointer) -> ChampionPointer:
    """Point `latest` at the new version unless a newer one got there first; compare-and-swap, so a
    concurrent move is re-read, never overwritten unseen."""
    key = layout.latest_pointer(line)
    for _ in range(CLAIM_TRIES):
        current, tag = read_pointer_tagged(store, line)
        if current and layout.version_number(current.version) > layout.version_number(pointer.version):
            log(f"[promote] latest stays {line}@{current.version}, promoted meanwhile and newer than {pointer.version}")
            return pointer.model_copy(update={"updated_at": None})
        if store.write_if(key, _json_bytes(pointer.to_json()), tag):
            return pointer
    raise UserError(f"{store.url(key)}: changed under this promotion {CLAIM_TRIES} times; not moved")


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def rollback(store: Store, line: str, version: str, reason: str, write: bool = True) -> ChampionPointer:
    """Move `latest` back to an older complete version, on purpose: recorded with who, when and why in
    the line's history, on the pointer, and in the next card. write=False: every check, nothing written."""
    if not layout.VERSION.fullmatch(version):
        raise UserError(f"--rollback {version!r}: not a version name (v<N>-<stage>, e.g. v2-sft)")
    key = layout.champion_dir(line, version)
    if not store.is_complete(key):
        raise UserError(f"--rollback: champion {line}@{version} not found (or incomplete) at {store.url(key)}")
    latest, tag = read_pointer_tagged(store, line)
    if latest is None:
        raise UserError(f"--rollback: line {line!r} has no latest champion to move back from")
    if latest.version == version:
        raise UserError(f"--rollback: {line}@{version} is already the line's latest")
    info = read_champion(store, key)
    event = RollbackEvent.model_validate(
        {"line": line, "from": latest.version, "to": version, "reason": reason, "by": getpass.getuser(), "at": now()}
    )
    pointer = ChampionPointer(
        line=line,
        version=version,
        key=key,
        stage=info.stage,
        run_id=info.run_id,
        updated_at=event.at,
        rollback=event,
    )
    if not write:
        return pointer
    event_key = layout.rollback_event(line, event.at)
    store.write_json(event_key, event.to_json())
    if not store.write_if(layout.latest_pointer(line), _json_bytes(pointer.to_json()), tag):
        store.delete(event_key)
        now_at = read_pointer(store, line)
        raise UserError(
            f"--rollback: latest of {line} moved while rolling back (now {now_at.version if now_at else 'none'}); "
            f"nothing changed, run it again if {version} is still wanted"
        )
    log(f"[promote] latest of {line} rolled back {latest.version} → {version}: {reason}")
    return pointer


def promote_champion(
    pipeline: PipelineConfig, record: RunRecord, champion: Candidate, precursor: Candidate | None, store: Store
) -> ChampionPointer:
    """Promote a swept candidate of a run, with its provenance and a card generated from the records.
    A checkpoint of another run swept with this one (sweep.runs) is promoted as that run's: its record
    says how it was trained; the selection that chose it stays this run's."""
    trained = load_record(store, layout.run_record(champion.run), RunRecord) if champion.run else record
    if precursor is None:
        came_from = None
    elif precursor.champion:  # the champion pointer it resolved to
        came_from = precursor.champion.to_json()
    else:  # or where it lives
        came_from = {"key": precursor.key, "spec": precursor.spec}
    info = ChampionInfo(
        stage=trained.stage,
        run_id=trained.run_id,
        candidate=champion.name,
        candidate_kind=champion.kind,
        run_record=layout.run_record(trained.run_prefix),
        selection=layout.selection_report(record.run_prefix),
        precursor=came_from,
        scores=ChampionScores.of(champion.scored),
        sweep_note=sweep_note(pipeline, champion.scored.mmlu.n),
    )
    if champion.kind == "merge":
        info.merge = champion.merge
    if champion.manual:
        info.manual = champion.manual
    if record.experiment:
        info.experiment = record.experiment.model_dump(include={"name", "status", "reason"})
    return promote(
        store,
        pipeline.line,
        champion,
        info,
        lambda final: card.render(store, final, pipeline.card),
        lambda final, local: champion_plots(store, pipeline.line, final, local),
    )


def refuse_rewind(store: Store, line: str, run: str, candidate: Candidate, run_id: str) -> None:
    """Promoting weights that are already an older champion would not move `latest` (it only moves
    forward): say so and name the rollback, instead of exiting 0 with nothing done."""
    version = find_promoted(store, line, run_id, candidate.weights_digest)
    latest = read_pointer(store, line) if version else None
    if latest and latest.version != version:
        raise UserError(
            f"{run}: {candidate.name} is already champion {line}@{version}; latest is {latest.version} and "
            f"promotion only moves it forward (to move it back: python launch/promote.py "
            f"--rollback {version} --reason '...')"
        )


def chosen_candidate(store: Store, run: str, name: str | None, reason: str | None) -> tuple[RunRecord, Candidate]:
    """The run's record and the candidate to promote from its sweep: the selection's champion, or
    `name`, which overrules the selection (and a gate refusal overrules the gate) only with a reason,
    kept on the candidate for champion.json and the card."""
    if not layout.RUN_KEY.fullmatch(run):
        raise UserError(f"{run!r} is not a run key (runs/<stage>/<stage>-<digest>, as the stage's log prints it)")
    if not store.exists(layout.selection_report(run)):
        raise UserError(f"{store.url(run)}: no sweep/selection.json; run the stage's sweep first")
    record = load_record(store, layout.run_record(run), RunRecord)
    selection = load_record(store, layout.selection_report(run), Selection)
    name = selection.champion if name is None else name
    kinds = {c.name: c.kind for c in selection.candidates}
    if kinds.get(name) in (None, "precursor", "incumbent") or not store.exists(layout.sweep_candidate(run, name)):
        names = ", ".join(n for n, kind in kinds.items() if kind not in ("precursor", "incumbent"))
        raise UserError(f"{name!r} is not a candidate of {run} (candidates: {names})")
    if name != selection.champion and not reason:
        raise UserError(f"{name} is not the selected champion ({selection.champion}); give --reason")
    gate_failed = selection.gate is not None and not selection.gate.passed
    if gate_failed and not reason:
        raise UserError(
            f"{run}: {selection.champion} was {selection.gate.reason}; give --reason to promote {name} anyway"
        )
    candidate = load_record(store, layout.sweep_candidate(run, name), Candidate)
    # the files to be copied are still the ones that were scored: checked before a version is claimed
    store.verify_in_place(candidate.key, include=is_model_file)
    overruled = [
        what
        for what, yes in (
            (f"the selection ({selection.champion})", name != selection.champion),
            ("the gate against the input model", gate_failed),
        )
        if yes
    ]
    if overruled:
        candidate = candidate.model_copy(update={"manual": {"overrules": " and ".join(overruled), "reason": reason}})
    return record, candidate


def promote_run(
    pipeline: PipelineConfig,
    store: Store,
    run: str,
    name: str | None = None,
    reason: str | None = None,
    write: bool = True,
) -> tuple[str, str, ChampionPointer | None]:
    """`launch/promote.py RUN`: every rule checked (above), then the candidate promoted with its card.
    Returns (the candidate's name, the version it is or would be promoted as, the pointer: None when
    write=False)."""
    record, candidate = chosen_candidate(store, run, name, reason)
    refuse_rewind(store, pipeline.line, run, candidate, record.run_id)
    if not write:
        return candidate.name, layout.next_version(store, pipeline.line, record.stage), None
    pointer = promote_champion(pipeline, record, candidate, precursor_of(record.init, store.uri), store)
    return candidate.name, pointer.version, pointer
