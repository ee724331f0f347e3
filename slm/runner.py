"""One stage, end to end: train → sweep every checkpoint → select → SLERP candidates → promote → card.

A run is named by its stage and a digest of its resolved config, starting weights and data, so
re-running the same stage finds its own run: a finished run is not trained again, an unfinished
one resumes from its newest complete checkpoint.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from slm import cluster, records
from slm.config import PipelineConfig, StageConfig, config_digest, load_yaml_config
from slm.errors import UserError
from slm.recipe import StageContext
from slm.store import Store


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sweep_note(pipeline: PipelineConfig, n_items: int) -> str:
    from eval.mmlu import SUBJECT_DOMAINS, select_subjects

    s = pipeline.sweep
    subjects = select_subjects(s.subjects)
    scope = ("all 57 subjects" if len(subjects) == len(SUBJECT_DOMAINS) else
             f"{len(subjects)} of 57 subjects ({', '.join(subjects)})")
    limit = f", at most {s.limit} items per subject" if s.limit else ""
    subset = " — a subset, not full MMLU" if s.limit or len(subjects) < len(SUBJECT_DOMAINS) else ""
    return f"lm-eval, {s.num_fewshot}-shot, {scope}{limit}: {n_items:,} test items{subset}."


def model_facts(store: Store, checkpoint_key: str, parameters: int) -> dict:
    cfg = json.loads(store.read_bytes(f"{checkpoint_key}/config.json"))
    pick = lambda *names: next((cfg[n] for n in names if n in cfg), None)  # noqa: E731
    return {"architecture": cfg.get("model_type"), "parameters": parameters,
            "hidden_size": pick("hidden_size", "n_embd"), "layers": pick("num_hidden_layers", "n_layer"),
            "heads": pick("num_attention_heads", "n_head"), "vocab_size": cfg.get("vocab_size"),
            "context": pick("max_position_embeddings", "n_positions"),
            "tie_word_embeddings": cfg.get("tie_word_embeddings", True)}


def training_summary(log_history: list[dict]) -> dict:
    losses = [h["loss"] for h in log_history if "loss" in h]
    evals = [{"step": h["step"], "eval_loss": h["eval_loss"]} for h in log_history if "eval_loss" in h]
    final = next((h for h in reversed(log_history) if "train_runtime" in h), {})
    tokens, runtime = final.get("num_input_tokens_seen"), final.get("train_runtime")
    return {"first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "min_loss": min(losses) if losses else None, "loss_fell": bool(losses) and losses[-1] < losses[0],
            "eval": evals, "train_runtime_s": runtime, "tokens": tokens,
            "tokens_per_s": tokens / runtime if tokens and runtime else None}


def checkpoints(store: Store, run_prefix: str) -> list[dict]:
    out = []
    for name in store.children(f"{run_prefix}/checkpoints"):
        key = f"{run_prefix}/checkpoints/{name}"
        if name.startswith("checkpoint-") and store.is_complete(key):
            out.append({"name": name, "key": key, "kind": "checkpoint", "step": int(name.split("-")[-1])})
    return sorted(out, key=lambda c: c["step"])


def init_identity(ref: dict | None):
    """What the starting weights are (file checksums for store trees), not how they were named."""
    if ref is None:
        return "scratch"
    if ref.get("key") is not None:
        return Store.open(ref["store"]).tree_manifest(ref["key"])["files"]
    return {k: ref.get(k) for k in ("local", "hf", "revision")}


def refuse_other_world_size(store: Store, stage: str, resume_identity: str, workers: int) -> None:
    """An unfinished run of the same config on another worker count is not resumed: say so, don't restart silently.

    Its ZeRO-2 optimizer state is partitioned per rank, and the Trainer skips already-seen batches
    per rank, so on a different world size the data position would replay or skip samples.
    """
    for run_id in store.children(f"runs/{stage}"):
        key = f"runs/{stage}/{run_id}/record.json"
        if not store.exists(key):
            continue
        other = store.read_json(key)
        if (other.get("resume_identity") != resume_identity or other.get("status") == "finished"
                or other["cluster"]["workers"] == workers):
            continue
        from slm.engine import latest_complete_checkpoint

        checkpoint = latest_complete_checkpoint(store, other["run_prefix"])
        if checkpoint:
            raise UserError(
                f"{stage}: run {run_id} of this config stopped at {checkpoint.rsplit('/', 1)[-1]} on "
                f"{other['cluster']['workers']} workers; resuming it on {workers} is not supported (ZeRO-2 optimizer "
                f"shards are per rank and the data position depends on the world size). Rerun with "
                f"--pipeline-set cluster.workers={other['cluster']['workers']} to resume it, or change the config "
                f"(e.g. train.seed) to start a new run on {workers} workers")


def worker_group_starts(store: Store, prefix: str) -> list[dict]:
    """Every start of the Ray Train worker group (first launch, FailureConfig restarts, reruns), oldest first."""
    return [store.read_json(f"{prefix}/train/starts/{name}") for name in sorted(store.children(f"{prefix}/train/starts"))]


def planned_token_warning(cfg: StageConfig, job, manifest: dict) -> str | None:
    """Pretraining only: planned tokens vs parameters (compute-optimal is ~20 per parameter)."""
    from transformers import AutoConfig

    from slm.init_checks import count_parameters, tokens_per_parameter_warning
    from slm.modeling import load_tokenizer, materialize, scratch_config

    if cfg.stage != "pretrain":
        return None
    t = cfg.train
    if t.max_steps > 0:
        planned = t.max_steps * t.micro_batch * t.grad_accum * job.workers * cfg.data.max_length
    else:
        planned = int(t.epochs * manifest.get("tokens", 0))
    if job.init is None:
        config = scratch_config(cfg.model.architecture, load_tokenizer(materialize(job.tokenizer)), cfg.data.max_length)
    else:
        config = AutoConfig.from_pretrained(str(materialize(job.init)), trust_remote_code=job.trust_remote_code)
    return tokens_per_parameter_warning(planned, count_parameters(config))


def train(pipeline: PipelineConfig, cfg: StageConfig, store: Store) -> dict:
    """Plan, train (or resume, or skip when finished) and return the run record."""
    from slm import engine
    from slm.datasets import read_manifest
    from stages import RECIPES

    ctx = StageContext(store, pipeline)
    job = RECIPES[cfg.stage].plan(cfg, ctx)
    manifest = read_manifest(store, cfg.data.dataset)
    data_digest = manifest.get("build_digest") or store.tree_manifest(cfg.data.dataset)["files"]["manifest.json"]["sha256"]
    identity = {"init": init_identity(job.init), "data": data_digest}
    run_id = f"{cfg.stage}-{config_digest(cfg, {**identity, 'workers': job.workers})}"
    prefix = f"runs/{cfg.stage}/{run_id}"
    record_key = f"{prefix}/record.json"
    record = store.read_json(record_key) if store.exists(record_key) else None
    if record and record.get("status") == "finished":
        log(f"[{cfg.stage}] run {run_id} already finished; not training again ({store.url(prefix)})")
        return record
    resume_identity = config_digest(cfg, identity)
    if record is None:
        refuse_other_world_size(store, cfg.stage, resume_identity, job.workers)
        record = {"stage": cfg.stage, "run_id": run_id, "run_prefix": prefix, "line": pipeline.line,
                  "resume_identity": resume_identity, "experiment": cfg.experiment.model_dump() if cfg.experiment else None,
                  "config": cfg.model_dump(mode="json"), "init": job.init or {"spec": "scratch"},
                  "tokenizer": job.tokenizer, "data": manifest, "data_manifest_sha256": data_digest,
                  "deepspeed": {"config_file": cfg.deepspeed, "config": job.ds_config,
                                "zero_stage": job.ds_config["zero_optimization"]["stage"]},
                  "cluster": pipeline.cluster.model_dump(), "seed": cfg.train.seed,
                  "versions": records.versions(), "git_commit": records.git_commit(),
                  "environment": records.environment_facts(), "attempts": [], "warnings": []}
        if job.logit_distill:
            record["logit_distill_teacher"] = job.logit_distill["teacher"]
        warning = planned_token_warning(cfg, job, manifest)
        if warning:
            record["warnings"].append(warning)
            log(f"[{cfg.stage}] warning: {warning}")
    for earlier in record["attempts"]:
        if earlier.get("status", "running") == "running":  # its driver died without finishing: preempted
            earlier["status"] = "interrupted"
            earlier["last_complete_checkpoint"] = engine.latest_complete_checkpoint(store, prefix)
    resume_from = engine.latest_complete_checkpoint(store, prefix)
    record["status"] = "running"
    record["attempts"].append({"attempt": len(record["attempts"]) + 1, "status": "running",
                               "started_at": records.now(), "resume_from": resume_from,
                               "workers": job.workers})
    if resume_from:
        log(f"[{cfg.stage}] run {run_id} was interrupted; attempt {len(record['attempts'])} resumes from "
            f"{store.url(resume_from)}")
    job = job.model_copy(update={"run_id": run_id, "run_prefix": prefix, "attempt": len(record["attempts"])})
    store.write_json(record_key, records.redact(record))
    cluster.connect()
    log(f"[{cfg.stage}] run {run_id}: training on {job.workers} Ray Train workers "
        f"({'GPU' if job.use_gpu else 'CPU'}), DeepSpeed ZeRO-{record['deepspeed']['zero_stage']}")
    try:
        engine.run(job)
    except BaseException as exc:
        record["attempts"][-1].update(status="failed", ended_at=records.now(),
                                      error=str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__)
        store.write_json(record_key, records.redact(record))
        raise

    facts = store.read_json(f"{prefix}/train/engine.json")
    history = store.read_json(f"{prefix}/train/log_history.json")
    ckpts = checkpoints(store, prefix)
    if not ckpts:
        raise UserError(f"{cfg.stage}: training finished without a complete checkpoint in {store.url(prefix)}")
    record.update(status="finished", finished_at=records.now(), engine=facts, training=training_summary(history),
                  checkpoints=[c["key"] for c in ckpts], model=model_facts(store, ckpts[-1]["key"], facts["parameters"]))
    record["attempts"][-1].update(status="finished", finished_at=record["finished_at"])
    record["worker_group_starts"] = worker_group_starts(store, prefix)
    restarts = [s for s in record["worker_group_starts"] if s["resume_from"]]
    if restarts:
        log(f"[{cfg.stage}] resumed {len(restarts)} time(s): "
            + "; ".join(f"attempt {s['attempt']} from {s['resume_from'].rsplit('/', 1)[-1]}" for s in restarts))
    from slm.init_checks import init_loss_warning

    warning = init_loss_warning(record["training"]["first_loss"], record["model"]["vocab_size"], record["init"]["spec"])
    if warning:
        record["warnings"].append(warning)
        log(f"[{cfg.stage}] warning: {warning}")
    from slm.chat import prompt_text
    from slm.modeling import load_tokenizer, materialize

    tokenizer = load_tokenizer(materialize(job.tokenizer), job.trust_remote_code, job.chat_template)
    if tokenizer.chat_template:
        record["chat_template_example"] = prompt_text(tokenizer, "<your question>")
    store.write_json(record_key, records.redact(record))
    t = record["training"]
    log(f"[{cfg.stage}] finished: loss {t['first_loss']:.4f} → {t['last_loss']:.4f}, "
        f"{len(ckpts)} checkpoints, world size {facts['world_size']}, ZeRO stage {facts['zero_stage']}")
    return record


def precursor_of(record: dict) -> dict | None:
    """The stage's starting model when it is a tree in this store (a champion or store: key)."""
    init = record.get("init") or {}
    if init.get("key") is None or init.get("store") is None:
        return None
    name = "precursor" + (f" ({init['champion']['line']}@{init['champion']['version']})" if init.get("champion") else "")
    return {"name": name, "key": init["key"], "kind": "precursor",
            "champion": init.get("champion")}


def experiment_incumbent(pipeline: PipelineConfig, stage: str, store: Store) -> dict | None:
    """What an experiment must beat: the newest champion promoted from its stage (None: its precursor)."""
    from slm.modeling import champion_pointer

    try:
        pointer = champion_pointer(store, pipeline.line, stage=stage)
    except UserError:
        return None
    return {"name": f"incumbent ({pointer['line']}@{pointer['version']})", "key": pointer["key"],
            "kind": "incumbent", "champion": pointer}


def judge_experiment(best: dict, incumbent: dict, policy) -> dict:
    """Head to head under the selection policy: accepted only when the experiment's best candidate wins."""
    from eval.selection import select

    duel = select([best, incumbent], policy)
    rows = {r["name"]: r for r in duel["candidates"]}
    gain = best["scores"]["mmlu"]["acc"] - incumbent["scores"]["mmlu"]["acc"]
    accepted = duel["champion"] == best["name"] and gain > 0
    reason = rows[best["name"]]["reason"]
    if duel["champion"] == best["name"] and not accepted:  # won a tie-break only: the status quo stays
        reason = f"ties the incumbent {incumbent['name']} on MMLU ({gain:+.2%}); an experiment must beat it"
    elif not accepted and rows[best["name"]]["status"] != "rejected":
        reason = f"{reason} (the incumbent {incumbent['name']} stays: {rows[incumbent['name']]['reason']})"
    return {"status": "accepted" if accepted else "rejected", "reason": reason, "candidate": best["name"],
            "incumbent": incumbent["name"], "incumbent_key": incumbent["key"], "noise": duel["noise"],
            "mmlu": {"candidate": best["scores"]["mmlu"]["acc"], "incumbent": incumbent["scores"]["mmlu"]["acc"]},
            "bench": {"candidate": (best["scores"].get("bench") or {}).get("score"),
                      "incumbent": (incumbent["scores"].get("bench") or {}).get("score")}}


def sweep_and_select(pipeline: PipelineConfig, record: dict, store: Store,
                     incumbent: dict | None = None) -> tuple[dict, dict, dict]:
    from eval import merge, report
    from eval.selection import report_row, select
    from eval.sweep import sweep

    prefix, use_gpu = record["run_prefix"], pipeline.cluster.use_gpu
    out = f"{prefix}/sweep"
    candidates = checkpoints(store, prefix)
    precursor = precursor_of(record)
    to_score = candidates + ([precursor] if precursor and (pipeline.sweep.score_precursor or record.get("experiment"))
                             else [])
    if incumbent and (not precursor or incumbent["key"] != precursor["key"]):
        to_score.append(incumbent)
    cluster.connect()
    log(f"[{record['stage']}] sweep: scoring {len(to_score)} models as Ray tasks")
    scored = sweep(store, to_score, pipeline.sweep, out, use_gpu)
    pool = [scored[c["name"]] for c in candidates]
    report_ = select(pool, pipeline.selection)
    if pipeline.merge.enabled:
        ranked = [r["name"] for r in report_["candidates"] if r["status"] == "champion"]
        ranked += [r["name"] for r in report_["candidates"] if r["status"] != "champion"]
        pairs = merge.resolve_pairs(([("champion", "precursor")] if precursor else []) + list(pipeline.merge.pairs),
                                    ranked, {**{c["name"]: c for c in candidates}, **scored})
        merges, seen = [], set()
        for base, other in pairs:
            if (base["name"], other["name"]) in seen:
                continue
            seen.add((base["name"], other["name"]))
            label = None if other.get("kind") == "precursor" and base["name"] == ranked[0] else f"{base['name']}-x-{other['name']}"
            merges += merge.merge_candidates(store, base["key"], other["key"], pipeline.merge.t, f"{prefix}/merges", label)
        merged = sweep(store, merges, pipeline.sweep, out, use_gpu)
        pool += [merged[m["name"]] for m in merges]
        report_ = select(pool, pipeline.selection)
    reference = []
    if precursor and precursor["name"] in scored:
        reference = [report_row(scored[precursor["name"]], "reference", "this stage's input model")]
    if incumbent and incumbent["name"] in scored:
        reference.append(report_row(scored[incumbent["name"]], "reference", "the stage's current champion"))
    report_["candidates"] += reference
    store.write_json(f"{out}/selection.json", report_)
    store.write_text(f"{out}/selection.md", report.markdown_table(report_))
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "selection.png"
        report.plot({**report_, "candidates": [c for c in report_["candidates"] if c["kind"] != "precursor"]},
                    reference, png, f"{pipeline.line} · {record['stage']} sweep")
        store.upload_file(png, f"{out}/selection.png")
    champion = next(c for c in pool if c["name"] == report_["champion"])
    log(f"[{record['stage']}] champion: {champion['name']} — "
        f"{next(r['reason'] for r in report_['candidates'] if r['name'] == champion['name'])}")
    if record.get("experiment"):
        against = scored.get((incumbent or {}).get("name")) or scored.get((precursor or {}).get("name"))
        if against is None:
            raise UserError(f"{record['stage']}: experiment {record['experiment']['name']} has nothing to be judged "
                            f"against (no champion from this stage and no precursor in the store)")
        report_["experiment"] = judge_experiment(champion, {**against, "kind": "incumbent"}, pipeline.selection)
        store.write_json(f"{out}/selection.json", report_)
    return champion, report_, precursor


def promote_champion(pipeline: PipelineConfig, record: dict, champion: dict, precursor: dict | None,
                     store: Store) -> dict:
    from slm import card
    from slm.promotion import promote

    scores = champion["scores"]
    info = {"stage": record["stage"], "run_id": record["run_id"], "candidate": champion["name"],
            "candidate_kind": champion["kind"], "run_record": f"{record['run_prefix']}/record.json",
            "selection": f"{record['run_prefix']}/sweep/selection.json",
            "precursor": (precursor or {}).get("champion") or ({"key": precursor["key"]} if precursor else None),
            "scores": {"mmlu": {k: v for k, v in scores["mmlu"].items() if k != "items"},
                       "bench": {k: v for k, v in scores["bench"].items() if k != "items"} if scores["bench"] else None},
            "sweep_note": sweep_note(pipeline, scores["mmlu"]["n"])}
    if champion["kind"] == "merge":
        info["merge"] = champion["merge"]
    if champion.get("manual"):
        info["manual"] = champion["manual"]
    if record.get("experiment"):
        info["experiment"] = {k: record["experiment"][k] for k in ("name", "status", "reason")}
    return promote(store, pipeline.line, champion, info,
                   lambda final: card.render(store, final, pipeline.card.model_dump()))


def run_stage(pipeline: PipelineConfig, name: str, store: Store, overrides: dict | None = None,
              train_only: bool = False) -> dict:
    from slm.config import deep_merge

    ref = pipeline.stage(name)
    cfg = load_yaml_config(ref.config, StageConfig, deep_merge(ref.set, overrides or {}))
    if cfg.stage != name:
        raise UserError(f"{ref.config}: declares stage {cfg.stage!r} but the pipeline lists it as {name!r}")
    record = train(pipeline, cfg, store)
    if train_only:
        return {"record": record}
    incumbent = experiment_incumbent(pipeline, name, store) if cfg.experiment else None
    champion, report_, precursor = sweep_and_select(pipeline, record, store, incumbent)
    if cfg.experiment:
        verdict = {**cfg.experiment.model_dump(), "stage": name, "run_id": record["run_id"],
                   "run_record": f"{record['run_prefix']}/record.json", **report_["experiment"],
                   "decided_at": records.now()}
        record["experiment"] = verdict
        store.write_json(f"{record['run_prefix']}/record.json", records.redact(record))
        store.write_json(f"experiments/{pipeline.line}/{record['run_id']}.json", verdict)
        log(f"[{name}] experiment {verdict['name']} {verdict['status']}: {verdict['reason']}")
        if verdict["status"] == "rejected":
            return {"record": record, "selection": report_, "experiment": verdict}
    pointer = promote_champion(pipeline, record, champion, precursor, store)
    log(f"[{name}] promoted {pipeline.line}@{pointer['version']} → {store.url(pointer['key'])}")
    return {"record": record, "selection": report_, "champion": pointer}


def build_data(builder_configs: list[str], store: Store) -> list[dict]:
    from data_builders import run_builder

    manifests = []
    for path in builder_configs:
        log(f"[data] building {path}")
        manifests.append(run_builder(path, store))
    return manifests


def open_pipeline(path: str, store_override: str | None = None, overrides: list[str] = ()) -> tuple[PipelineConfig, Store]:
    from slm.config import parse_overrides, resolve_path

    pipeline = load_yaml_config(path, PipelineConfig, parse_overrides(list(overrides)))
    store_uri = store_override or pipeline.store
    if "://" not in store_uri:
        store_uri = str(resolve_path(store_uri))
    return pipeline.model_copy(update={"store": store_uri}), Store.open(store_uri)
