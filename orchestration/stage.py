"""One stage end to end — data, train, sweep, select, promote — and the pipeline config it runs in."""

from __future__ import annotations

from pathlib import Path

from slm import STAGE_ORDER, cluster, layout, records
from slm.config import (
    BuilderConfig,
    PipelineConfig,
    StageConfig,
    deep_merge,
    leaf_paths,
    load_yaml_config,
    override_origins,
    parse_overrides,
    resolve_path,
)
from slm.data_builders import run_builder
from slm.errors import UserError, require_extra
from slm.eval.bench import load_bench
from slm.log import log
from slm.orchestration.promotion import promote_champion
from slm.orchestration.sweeping import experiment_incumbent, sweep_and_select
from slm.orchestration.training import train
from slm.store import Store

PIPELINE_KEYS = set(PipelineConfig.model_fields)
STAGE_KEYS = set(StageConfig.model_fields)


def route_overrides(pairs: list[str], stage: str | None = None) -> tuple[dict, dict[str, dict], dict[str, dict]]:
    """`--set` means the same in every launcher: a pipeline key (cluster.workers=8) overrides the
    pipeline config; a stage key (train.lr=1e-5) overrides the stage being run, or without one every
    stage ("*"); `repair.train.lr=1e-5` names the stage. Returns (pipeline overrides, stage → overrides,
    "pipeline" / stage → {key path: the --set that set it}).

    `dpo` is both a stage and a stage key: `dpo.beta=0.2` is the key, `dpo.train.lr=…` names the stage."""
    pipeline: dict = {}
    stages: dict[str, dict] = {}
    origins: dict[str, dict] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set {pair}: not of the form key.path=value (e.g. train.lr=1e-5)")
        head, _, rest = pair.split("=", 1)[0].partition(".")
        if head in PIPELINE_KEYS:
            target, pair_for_target = "pipeline", pair
            pipeline = deep_merge(pipeline, parse_overrides([pair]))
        elif head in STAGE_ORDER and rest.partition(".")[0] in STAGE_KEYS:
            target, pair_for_target = head, pair[len(head) + 1 :]
            stages[head] = deep_merge(stages.get(head, {}), parse_overrides([pair_for_target]))
        elif head in STAGE_KEYS:
            target, pair_for_target = stage or "*", pair
            stages[target] = deep_merge(stages.get(target, {}), parse_overrides([pair]))
        elif head in STAGE_ORDER:
            raise UserError(f"--set {pair}: name a key of the {head} stage, e.g. {head}.train.lr=1e-5")
        else:
            raise UserError(
                f"--set {pair}: {head!r} is neither a pipeline key ({', '.join(sorted(PIPELINE_KEYS))}), "
                f"a stage key ({', '.join(sorted(STAGE_KEYS))}) nor a stage name"
            )
        origins.setdefault(target, {}).update(override_origins([pair_for_target], f"--set {pair}"))
    return pipeline, stages, origins


def open_pipeline(
    path: str,
    store_override: str | None = None,
    overrides: list[str] = (),
    stage: str | None = None,
    existing_store: bool = False,
) -> tuple[PipelineConfig, Store]:
    """Load the pipeline config with `--set` overrides applied (see route_overrides), and open its store.
    existing_store: the command only reads or updates a store (promote, card), so a local store
    directory that does not exist is a mistyped --store, not an empty line."""
    pipeline_overrides, stage_overrides, origins = route_overrides(list(overrides), stage)
    pipeline = load_yaml_config(path, PipelineConfig, pipeline_overrides, origins.get("pipeline"))
    refs = []
    for ref in pipeline.stages:
        merged = ref.model_copy(
            update={
                "set": deep_merge(deep_merge(ref.set, stage_overrides.get("*", {})), stage_overrides.get(ref.name, {}))
            }
        )
        merged._origins = {
            **{key: f"{resolve_path(path)} (stages: {ref.name}: set: {'.'.join(key)})" for key in leaf_paths(ref.set)},
            **origins.get("*", {}),
            **origins.get(ref.name, {}),
        }
        refs.append(merged)
    for name in set(stage_overrides) - {"*"} - {r.name for r in refs}:
        pipeline.stage(name)  # the one-line unknown-stage error
    pipeline = pipeline.model_copy(update={"stages": refs})
    if pipeline.sweep.bench:  # checked now, not after training and MMLU scoring
        load_bench(resolve_path(pipeline.sweep.bench))
    store_uri = store_override or pipeline.store
    if "://" not in store_uri:
        if cluster.in_job_working_dir_copy() and not Path(store_uri).expanduser().is_absolute():
            raise UserError(
                f"store {store_uri!r} is a relative path, and this driver runs in a Ray job's temporary "
                f"copy of the working directory, deleted with the job: pass --store with an absolute "
                f"path (e.g. --store $PWD/artifacts/store) or an s3:// URI"
            )
        store_uri = str(resolve_path(store_uri))
        if existing_store and not Path(store_uri).is_dir():
            raise UserError(f"store {store_uri} does not exist (no such directory); check --store")
    return pipeline.model_copy(update={"store": store_uri}), Store.open(store_uri)


def load_stage_config(pipeline: PipelineConfig, name: str, overrides: dict | None = None) -> StageConfig:
    ref = pipeline.stage(name)
    config = resolve_path(ref.config)
    if not config.is_file():
        raise UserError(
            f"stage {name}: its config file {config} does not exist (the pipeline's stages: {name}: config)"
        )
    cfg = load_yaml_config(config, StageConfig, deep_merge(ref.set, overrides or {}), ref._origins)
    if cfg.stage != name:
        raise UserError(f"{ref.config}: declares stage {cfg.stage!r} but the pipeline lists it as {name!r}")
    return cfg


def check_before_launch(pipeline: PipelineConfig, names: list[str], store: Store, probe_store: bool = True) -> None:
    """What can be checked without training is checked before any Ray worker starts: every stage
    config that will run, its DeepSpeed config (against DeepSpeed's own model), its builder configs,
    and (probe_store) that the store takes a write."""
    from slm.engine import check_train_extra, load_ds_config
    from slm.orchestration.evaluate import check_settings

    check_settings(pipeline)
    if pipeline.merge.enabled:
        require_extra("mergekit", "merge", "merge.enabled (SLERP candidates in the sweep)")
    for name in names:
        cfg = load_stage_config(pipeline, name)
        load_ds_config(cfg.deepspeed, pipeline.cluster.use_gpu)
        check_train_extra(cfg.train, str(resolve_path(pipeline.stage(name).config)))
        if cfg.stage == "dpo":
            require_extra("trl", "dpo", "the dpo stage")
        if cfg.lora:
            require_extra("peft", "lora", f"{name}: lora")
        for builder in pipeline.stage(name).builders:
            load_yaml_config(builder, BuilderConfig)
    if probe_store:
        store.check_writable()


def build_data(builder_configs: list[str], store: Store, evals) -> list[dict]:
    """Run builders; `evals` (data_builders.eval_index(pipeline)) is what their rows are decontaminated against."""
    manifests = []
    for path in builder_configs:
        log(f"[data] building {path}")
        manifests.append(run_builder(path, store, evals))
    return manifests


def record_experiment(pipeline: PipelineConfig, store: Store, record: dict, cfg: StageConfig, verdict: dict) -> dict:
    verdict = {
        **cfg.experiment.model_dump(),
        "stage": cfg.stage,
        "run_id": record["run_id"],
        "run_record": layout.run_record(record["run_prefix"]),
        **verdict,
        "decided_at": records.now(),
    }
    record["experiment"] = verdict
    store.write_json(layout.run_record(record["run_prefix"]), records.redact(record))
    store.write_json(layout.experiment_verdict(pipeline.line, record["run_id"]), verdict)
    log(f"[{cfg.stage}] experiment {verdict['name']} {verdict['status']}: {verdict['reason']}")
    return verdict


def record_not_promoted(pipeline: PipelineConfig, store: Store, record: dict, selection) -> dict:
    """The gate kept the stage's champion out: say so in the run record, the line, and the log, and
    name what the line's next stage starts from instead."""
    stage = record["stage"]
    verdict = {
        "status": "not promoted",
        "stage": stage,
        "run_id": record["run_id"],
        "candidate": selection.champion,
        "reason": selection.gate["reason"],
        "gate": selection.gate,
        "run_record": layout.run_record(record["run_prefix"]),
        "decided_at": records.now(),
        "overrule": f"python launch/promote.py {record['run_prefix']} --reason '...'",
    }
    record["promotion"] = verdict
    store.write_json(layout.run_record(record["run_prefix"]), records.redact(record))
    store.write_json(layout.not_promoted(pipeline.line, stage), verdict)
    log(f"[{stage}] {selection.champion} {verdict['reason']}")
    latest = layout.latest_pointer(pipeline.line)
    if store.exists(latest):
        pointer = records.ChampionPointer.model_validate(store.read_json(latest))
        log(
            f"[{stage}] the line's champion stays {pipeline.line}@{pointer.version}; stages that start from "
            f"champion:{pipeline.line} start from it"
        )
    else:
        log(f"[{stage}] the line {pipeline.line} has no champion yet; to promote anyway: {verdict['overrule']}")
    return verdict


def run_stage(
    pipeline: PipelineConfig, name: str, store: Store, overrides: dict | None = None, train_only: bool = False
) -> dict:
    """Train (or resume, or find finished) one stage, then sweep, select and promote its champion."""
    cfg = load_stage_config(pipeline, name, overrides)
    record = train(pipeline, cfg, store)
    if train_only:
        return {"record": record}
    incumbent = experiment_incumbent(pipeline, name, store) if cfg.experiment else None
    champion, selection, precursor = sweep_and_select(pipeline, record, store, incumbent)
    if cfg.experiment:
        verdict = record_experiment(pipeline, store, record, cfg, selection.experiment)
        if verdict["status"] == "rejected":
            return {"record": record, "selection": selection, "experiment": verdict}
    if not selection.promotable:
        return {
            "record": record,
            "selection": selection,
            "not_promoted": record_not_promoted(pipeline, store, record, selection),
        }
    pointer = promote_champion(pipeline, record, champion, precursor, store)
    log(f"[{name}] promoted {pipeline.line}@{pointer.version} → {store.url(pointer.key)}")
    return {"record": record, "selection": selection, "champion": pointer}
