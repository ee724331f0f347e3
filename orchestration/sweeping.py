"""After training: score every checkpoint (and merges, the input model, an incumbent), select the
champion, gate it against the stage's input model, and judge experiments against the stage's
current champion."""

from __future__ import annotations

import tempfile
from pathlib import Path

from slm import cluster, layout
from slm.config import PipelineConfig
from slm.errors import UserError
from slm.eval import merge, report
from slm.eval.mmlu import SUBJECT_DOMAINS, select_subjects
from slm.eval.scores import Candidate, Selection
from slm.eval.selection import gate, report_row, select
from slm.eval.sweep import candidate_digests, sweep
from slm.log import log
from slm.modeling import champion_pointer, resolve_ref
from slm.orchestration.training import checkpoints, files_identity
from slm.records import load_record
from slm.refs import ModelRef, ScratchRef
from slm.run_record import RunRecord
from slm.store import Store


def sweep_note(pipeline: PipelineConfig, n_items: int) -> str:
    s = pipeline.sweep
    subjects = select_subjects(s.subjects)
    scope = (
        "all 57 subjects"
        if len(subjects) == len(SUBJECT_DOMAINS)
        else f"{len(subjects)} of 57 subjects ({', '.join(subjects)})"
    )
    limit = f", at most {s.limit} items per subject" if s.limit else ""
    subset = " — a subset, not full MMLU" if s.limit or len(subjects) < len(SUBJECT_DOMAINS) else ""
    return f"lm-eval, {s.num_fewshot}-shot, {scope}{limit}: {n_items:,} test items{subset}."


def precursor_of(init: ModelRef, store_uri: str) -> Candidate | None:
    """The stage's input model, whatever it is: a champion or `store:` tree of this store, `s3://`, a
    local directory or `hf:` (None only for a stage trained from scratch). Scored like any candidate,
    cached by weights."""
    if isinstance(init, ScratchRef):
        return None
    champion = getattr(init, "champion", None)
    if init.in_store(store_uri):  # a tree of this store: the sweep reads it there (and can merge with it)
        name = "input model" + (f" ({champion.line}@{champion.version})" if champion else "")
        return Candidate(name=name, key=init.key, kind="precursor", champion=champion, spec=init.spec)
    return Candidate(name="input model", ref=init, kind="precursor", spec=init.spec, champion=champion)


def other_runs(pipeline: PipelineConfig, record: RunRecord, store: Store) -> list[Candidate]:
    """The complete checkpoints of the stage's other runs named in `sweep.runs`, as candidates named
    `<run id>/checkpoint-<step>`. Each run must be a finished run of this stage from the same input
    model and tokenizer: the gate compares the champion with this stage's input model, whichever run
    it came from."""
    where = f"sweep.runs.{record.stage}"
    found = []
    for run_id in pipeline.sweep.runs.get(record.stage, []):
        if run_id == record.run_id:
            continue  # this run is swept anyway
        prefix = layout.run_prefix(record.stage, run_id)
        if not store.exists(layout.run_record(prefix)):
            raise UserError(f"{where}: run {run_id} not found ({store.url(layout.run_record(prefix))} does not exist)")
        other = load_record(store, layout.run_record(prefix), RunRecord)
        if other.status != "finished":
            raise UserError(
                f"{where}: run {run_id} has not finished (status {other.status}); finish or resume it first"
            )
        for what in ("init", "tokenizer"):
            if files_identity(getattr(other, what)) != files_identity(getattr(record, what)):
                raise UserError(
                    f"{where}: run {run_id} started from another {what} ({getattr(other, what).spec}) than this "
                    f"run ({getattr(record, what).spec}); only runs from the same input model are swept together"
                )
        steps = checkpoints(store, prefix)
        if not steps:
            raise UserError(f"{where}: run {run_id} has no complete checkpoint under {store.url(prefix)}")
        found += [c.model_copy(update={"name": f"{run_id}/{c.name}", "run": prefix}) for c in steps]
    return found


def reference_candidate(pipeline: PipelineConfig, store: Store) -> Candidate | None:
    """`sweep.reference`: a model scored beside the candidates as a ceiling row, never one of them."""
    spec = pipeline.sweep.reference
    if spec is None:
        return None
    ref = resolve_ref(spec, store, "sweep.reference")
    where = {"key": ref.key} if ref.in_store(store.uri) else {"ref": ref}  # a tree of this store is read in place
    return Candidate(name=f"reference ({spec})", kind="reference", spec=spec, **where)


def experiment_incumbent(pipeline: PipelineConfig, stage: str, store: Store) -> Candidate | None:
    """What an experiment must beat: the newest champion promoted from its stage (None: its precursor)."""
    try:
        pointer = champion_pointer(store, pipeline.line, stage=stage)
    except UserError:
        return None
    return Candidate(
        name=f"incumbent ({pointer.line}@{pointer.version})",
        key=pointer.key,
        kind="incumbent",
        champion=pointer.to_json(),
    )


def judge_experiment(best: Candidate | dict, incumbent: Candidate | dict, policy) -> dict:
    """Head to head under the selection policy: accepted only when the experiment's best candidate wins."""
    best, incumbent = (c if isinstance(c, Candidate) else Candidate.model_validate(c) for c in (best, incumbent))
    duel = select([best, incumbent], policy)
    mine, theirs = duel.row(best.name), duel.row(incumbent.name)
    gain = best.scored.mmlu.acc - incumbent.scored.mmlu.acc
    accepted = duel.champion == best.name and gain > 0
    reason = mine.reason
    if duel.champion == best.name and not accepted:  # won a tie-break only: the status quo stays
        reason = f"ties the incumbent {incumbent.name} on MMLU ({gain:+.2%}); an experiment must beat it"
    elif not accepted and mine.status != "rejected":
        reason = f"{reason} (the incumbent {incumbent.name} stays: {theirs.reason})"
    bench = lambda c: c.scored.bench.score if c.scored.bench else None  # noqa: E731
    return {
        "status": "accepted" if accepted else "rejected",
        "reason": reason,
        "candidate": best.name,
        "incumbent": incumbent.name,
        "incumbent_key": incumbent.key,
        "noise": duel.noise.to_json() if duel.noise else None,
        "mmlu": {"candidate": best.scored.mmlu.acc, "incumbent": incumbent.scored.mmlu.acc},
        "bench": {"candidate": bench(best), "incumbent": bench(incumbent)},
    }


def add_merges(
    pipeline: PipelineConfig,
    store: Store,
    prefix: str,
    selection: Selection,
    candidates: list[Candidate],
    scored: dict[str, Candidate],
    precursor: Candidate | None,
    tag: str = "sweep",
) -> list[Candidate]:
    """SLERP the champion with its precursor (and any configured pairs); the merges, scored."""
    ranked = [r.name for r in selection.candidates if r.status == "champion"]
    ranked += [r.name for r in selection.candidates if r.status != "champion"]
    pairs = merge.resolve_pairs(
        ([("champion", "precursor")] if precursor else []) + list(pipeline.merge.pairs),
        ranked,
        {**{c.name: c for c in candidates}, **scored},
    )
    merges, seen = [], set()
    for base, other in pairs:
        if (base.name, other.name) in seen:
            continue
        seen.add((base.name, other.name))
        default_pair = other.kind == "precursor" and base.name == ranked[0]
        label = None if default_pair else f"{base.name}-x-{other.name}"
        try:
            merges += merge.merge_candidates(store, base, other, pipeline.merge.t, layout.merges_dir(prefix), label)
        except UserError as exc:
            if not default_pair:
                raise
            # e.g. a pad token added to the vocabulary (slm/padding.py): the shapes no longer match
            log(f"[{tag}] no SLERP of the champion with its input model: {exc}")
    plain = [c for c in candidates if c.kind == "checkpoint" and c.run is None]  # averages: this run's own
    if pipeline.merge.average_last and len(plain) >= 2:
        merges.append(merge.average_candidate(store, plain, pipeline.merge.average_last, layout.merges_dir(prefix)))
    ema = merge.ema_candidate(store, plain, layout.merges_dir(prefix)) if plain else None
    if ema is not None:
        merges.append(ema)
    # scored against the input model's drift replies, as the checkpoints were: a merge may be the champion
    merged = sweep(
        store, merges, pipeline.sweep, layout.sweep_dir(prefix), pipeline.cluster.use_gpu, tag, reference=precursor
    )
    return [merged[m.name] for m in merges]


def write_report(store: Store, out: str, selection: Selection, reference: list, title: str) -> None:
    store.write_json(layout.selection_file(out), selection.to_json())
    store.write_text(layout.selection_file(out, "md"), report.markdown_table(selection))
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "selection.png"
        shown = selection.model_copy(update={"candidates": [c for c in selection.candidates if c not in reference]})
        report.plot(shown, reference, png, title)
        store.upload_file(png, layout.selection_file(out, "png"))


def sweep_and_select(
    pipeline: PipelineConfig, record: RunRecord, store: Store, incumbent: Candidate | None = None
) -> tuple[Candidate, Selection, Candidate | None]:
    prefix, use_gpu = record.run_prefix, pipeline.cluster.use_gpu
    out = layout.sweep_dir(prefix)
    candidates = checkpoints(store, prefix) + other_runs(pipeline, record, store)
    precursor = precursor_of(record.init, store.uri)
    ceiling = reference_candidate(pipeline, store)
    gated = pipeline.selection.gate.enabled and precursor is not None
    to_score = candidates + (
        [precursor] if precursor and (gated or pipeline.sweep.score_precursor or record.experiment) else []
    )
    if incumbent and (not precursor or incumbent.key != precursor.key):
        to_score.append(incumbent)
    if ceiling:
        to_score.append(ceiling)
    digests = candidate_digests(store, to_score)  # weights checked against their markers, before Ray
    cluster.connect()
    tag = f"{record.stage} sweep"
    scored = sweep(store, to_score, pipeline.sweep, out, use_gpu, tag, digests=digests)
    pool = [scored[c.name] for c in candidates]
    selection = select(pool, pipeline.selection)
    if pipeline.merge.enabled:
        pool += add_merges(pipeline, store, prefix, selection, candidates, scored, precursor, tag)
        selection = select(pool, pipeline.selection)
    reference = []
    champion = next(c for c in pool if c.name == selection.champion)
    if gated:
        selection.gate = gate(champion, scored[precursor.name], pipeline.selection.gate)
    if precursor and precursor.name in scored:
        reference = [report_row(scored[precursor.name], "baseline", f"this stage's input model ({precursor.spec})")]
    if incumbent and incumbent.name in scored:
        reference.append(report_row(scored[incumbent.name], "reference", "the stage's current champion"))
    if ceiling:
        reference.append(
            report_row(scored[ceiling.name], "ceiling", "sweep.reference: scored for comparison, not a candidate")
        )
    selection.candidates += reference
    write_report(store, out, selection, reference, f"{pipeline.line} · {record.stage} sweep")
    log(f"[{record.stage}] champion: {champion.name} — {selection.row(champion.name).reason}")
    if selection.gate:
        log(f"[{record.stage}] gate vs the input model: {selection.gate.summary}")
    if record.experiment:
        against = (scored.get(incumbent.name) if incumbent else None) or (
            scored.get(precursor.name) if precursor else None
        )
        if against is None:
            raise UserError(
                f"{record.stage}: experiment {record.experiment.name} has nothing to be judged "
                f"against (no champion from this stage and no precursor in the store)"
            )
        selection.experiment = judge_experiment(
            champion, against.model_copy(update={"kind": "incumbent"}), pipeline.selection
        )
        store.write_json(layout.selection_file(out), selection.to_json())
    return champion, selection, precursor
