"""The standalone evaluator: score any models — directories, `hf:` repos, `s3://` trees, store keys,
champions, or every checkpoint of a run — with the sweep a stage runs after training (same MMLU
settings, bench, score cache and report), optionally selecting a champion and SLERP-merging it.

Scores are cached by weights checksum and eval settings, so a model a stage sweep already scored is
not scored again here, and the reverse.
"""

from __future__ import annotations

import re

from slm import cluster, layout, refs
from slm.config import PipelineConfig, config_digest, resolve_path
from slm.errors import UserError
from slm.eval import mmlu
from slm.eval.local_data import LOCAL_TASKS
from slm.eval.scores import Candidate, GateVerdict, Selection
from slm.eval.selection import gate, gate_record, report_row, select
from slm.eval.sweep import candidate_digests, check_inputs, settings_digest, sweep
from slm.log import log
from slm.modeling import resolve_ref
from slm.orchestration.sweeping import add_merges, write_report
from slm.orchestration.training import checkpoints
from slm.store import Store


def label(spec: str) -> str:
    """A candidate name from a model reference: short, and safe as a file name in the store."""
    named = refs.parse(spec).kind in ("champion", "hf")  # the name is the whole reference, not a path's tail
    tail = spec.split(":", 1)[1] if named else spec.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.@-]+", "-", tail).strip("-") or "model"


def candidates_of(specs: list[str], store: Store) -> list[Candidate]:
    """Model references (or run keys) → sweep candidates, each with a unique name."""
    out = []
    for spec in specs:
        if layout.RUN_KEY.fullmatch(spec.strip("/")):
            run = spec.strip("/")
            found = checkpoints(store, run)
            if not found:
                raise UserError(f"run {store.url(run)}: no complete checkpoint to evaluate")
            prefix = f"{run.rsplit('/', 1)[-1]}-" if len(specs) > 1 else ""
            out += [c.model_copy(update={"name": f"{prefix}{c.name}"}) for c in found]
            continue
        ref = resolve_ref(spec, store, what="model")
        if ref.in_store(store.uri):  # a tree of this store: mergeable
            out.append(Candidate(name=label(spec), kind="model", spec=spec, key=ref.key))
        else:
            out.append(Candidate(name=label(spec), kind="model", spec=spec, ref=ref))
    names = [c.name for c in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"two models would both be named {twice[0]!r} in the report; evaluate them separately")
    return out


def check_settings(pipeline: PipelineConfig) -> None:
    """What the scoring tasks would fail on, checked before Ray starts."""
    spec = pipeline.sweep
    check_inputs(spec)
    if not spec.mmlu_dir.startswith("hf:"):
        data_dir = resolve_path(spec.mmlu_dir)
        if not data_dir.is_dir():
            raise UserError(f"sweep.mmlu_dir: no MMLU data at {data_dir}")
        subjects = mmlu.select_subjects(spec.subjects)
        for split in ("test", "dev"):
            missing = [s for s in subjects if not (data_dir / split / f"{s}_{split}.csv").is_file()]
            if missing:
                raise UserError(
                    f"sweep.mmlu_dir {data_dir}: no {split} file for {len(missing)} of the "
                    f"{len(subjects)} subjects (first: {missing[0]}); the repository ships 6 subjects in "
                    f"eval/data/mmlu: set sweep.subjects, or point mmlu_dir at a full MMLU copy or "
                    f"hf:cais/mmlu"
                )
    if spec.extra_tasks:
        from lm_eval.tasks import TaskManager  # heavy: only when extra tasks are named

        known = set(TaskManager(include_path=str(LOCAL_TASKS)).all_tasks)
        unknown = [t for t in spec.extra_tasks if t not in known]
        if unknown:
            raise UserError(f"sweep.extra_tasks: unknown lm-eval task {unknown[0]!r}")


def ranked_rows(pool: list[Candidate]) -> Selection:
    """The report without a selection: every model, best MMLU first."""
    rows = sorted(pool, key=lambda c: (-c.scored.mmlu.acc, c.name))
    return Selection(champion=None, candidates=[report_row(c, "scored", "") for c in rows])


def evaluate(
    pipeline: PipelineConfig,
    store: Store,
    specs: list[str],
    name: str | None = None,
    choose: bool = False,
    merge: bool = False,
    baseline: str | None = None,
) -> tuple[str, Selection]:
    """Score `specs`; returns (the evaluation's store prefix, the report). Laid out like a run:
    `<prefix>/sweep/` holds each model's scores and selection.json/.md/.png, `<prefix>/merges/` the merges."""
    if merge and not choose:
        raise UserError("--merge merges the selected champion with the runner-up: add --select")
    if name is not None and not layout.LINE.fullmatch(name):
        raise UserError(
            f"--name {name!r}: a report name is letters, digits, '_', '.' and '-' (it becomes "
            f"evaluations/<name>/ in the store)"
        )
    check_settings(pipeline)
    if baseline is not None and baseline not in specs:
        specs = [baseline, *specs]
    candidates = candidates_of(specs, store)
    base_name = None
    if baseline is not None:
        named = candidates_of([baseline], store)
        if len(named) != 1:
            raise UserError(f"--baseline {baseline}: names {len(named)} models (a run's checkpoints); name one")
        base_name = named[0].name
    if merge and (len(candidates) < 2 or any(c.key is None for c in candidates)):
        raise UserError(
            "--merge needs at least two models that are trees of this store (run checkpoints, "
            "champion:, store: references)"
        )
    out = layout.evaluation_dir(name or config_digest({"models": specs, "settings": settings_digest(pipeline.sweep)}))
    digests = candidate_digests(store, candidates)  # weights checked against their markers, before Ray
    cluster.connect()
    log(f"[evaluate] {len(candidates)} model(s) → {store.url(out)}")
    scored = sweep(
        store,
        candidates,
        pipeline.sweep,
        layout.sweep_dir(out),
        pipeline.cluster.use_gpu,
        digests=digests,
        reference=base_name,
    )
    pool = [scored[c.name] for c in candidates]
    if choose:
        selection = select(pool, pipeline.selection)
        if merge:
            merge_spec = pipeline.merge.model_copy(update={"pairs": [("champion", "runner_up")]})
            pool += add_merges(
                pipeline.model_copy(update={"merge": merge_spec}),
                store,
                out,
                selection,
                candidates,
                scored,
                precursor=None,
            )
            selection = select(pool, pipeline.selection)
    else:
        selection = ranked_rows(pool)
    write_report(
        store, layout.sweep_dir(out), selection, [], f"{pipeline.line} · evaluation of {len(candidates)} model(s)"
    )
    if baseline is not None:
        base = scored[base_name]
        judged = [scored[c.name] for c in candidates if c.name != base_name]
        verdicts = judge(store, out, base, judged, pipeline, baseline)
        for v in verdicts:
            log(f"[evaluate] {v.candidate} vs {baseline}: {'passed' if v.passed else 'failed'} — {v.reason}")
    return out, selection


def judge(
    store: Store, out: str, base: Candidate, judged: list[Candidate], pipeline: PipelineConfig, baseline: str
) -> list[GateVerdict]:
    """Every judged model against the baseline with the stage gate's own tests and settings; the
    verdicts to `<out>/gate.json`, in the shape the stage gate writes."""
    verdicts = [gate(c, base, pipeline.selection.gate) for c in judged]
    store.write_json(
        f"{out}/gate.json",
        {
            "baseline": baseline,
            "alpha": pipeline.selection.gate.alpha,
            "judged": [gate_record(v) for v in verdicts],
        },
    )
    return verdicts
