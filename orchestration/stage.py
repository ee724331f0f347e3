"""One stage end to end — data, train, sweep, select, promote — and the pipeline config it runs in."""

from __future__ import annotations

from pathlib import Path

from slm import STAGE_ORDER, cluster, layout, records
from slm.config import (
    BuilderConfig,
    PipelineConfig,
    StageConfig,
    StageOverride,
    StageRef,
    leaf_paths,
    load_yaml_config,
    override_origins,
    parse_overrides,
    resolve_path,
)
from slm.data_builders import run_builder
from slm.errors import UserError, require_extra
from slm.eval.selection import gate_record
from slm.eval.sweep import check_inputs
from slm.log import log
from slm.orchestration.promotion import promote_champion
from slm.orchestration.sweeping import experiment_incumbent, sweep_and_select
from slm.orchestration.training import train, write_record
from slm.run_record import ExperimentVerdict, NotPromoted, RunRecord
from slm.store import Store

PIPELINE_KEYS = set(PipelineConfig.model_fields)
STAGE_KEYS = set(StageConfig.model_fields)


def route_overrides(pairs: list[str], stage: str | None = None) -> tuple[StageOverride, dict[str, StageOverride]]:
    """`--set` means the same in every launcher: a pipeline key (cluster.workers=8) overrides the
    pipeline config; a stage key (train.lr=1e-5) overrides the stage being run, or without one every
    stage ("*"); `repair.train.lr=1e-5` names the stage. Returns (the pipeline's override, stage or "*"
    → its override), each with the --set that set each key.

    `dpo` is both a stage and a stage key: `dpo.beta=0.2` is the key, `dpo.train.lr=…` names the stage."""
    pipeline = StageOverride()
    stages: dict[str, StageOverride] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set {pair}: not of the form key.path=value (e.g. train.lr=1e-5)")
        head, _, rest = pair.split("=", 1)[0].partition(".")
        if head in PIPELINE_KEYS:
            target, pair_for_target = "pipeline", pair
        elif head in STAGE_ORDER and rest.partition(".")[0] in STAGE_KEYS:
            target, pair_for_target = head, pair[len(head) + 1 :]
        elif head in STAGE_KEYS:
            target, pair_for_target = stage or "*", pair
        elif head in STAGE_ORDER:
            raise UserError(f"--set {pair}: name a key of the {head} stage, e.g. {head}.train.lr=1e-5")
        else:
            raise UserError(
                f"--set {pair}: {head!r} is neither a pipeline key ({', '.join(sorted(PIPELINE_KEYS))}), "
                f"a stage key ({', '.join(sorted(STAGE_KEYS))}) nor a stage name"
            )
        one = StageOverride(parse_overrides([pair_for_target]), override_origins([pair_for_target], f"--set {pair}"))
        if target == "pipeline":
            pipeline = pipeline.then(one)
        else:
            stages[target] = stages.get(target, StageOverride()).then(one)
    return pipeline, stages


class StageSettings:
    """What a command changes in its stages' configs, beside the pipeline config (never inside it): the
    pipeline file's `set:` of each stage, then --set keys for every stage, then those naming the stage.
    Each stage config is read and validated once, here, however many steps ask for it."""

    def __init__(self, pipeline_file: str | None = None, overrides: dict[str, StageOverride] | None = None):
        self.pipeline_file = pipeline_file
        self.overrides = overrides or {}
        self._configs: dict[str, StageConfig] = {}

    def override(self, ref: StageRef) -> StageOverride:
        where = self.pipeline_file or "the pipeline config"
        in_file = StageOverride(
            ref.set, {key: f"{where} (stages: {ref.name}: set: {'.'.join(key)})" for key in leaf_paths(ref.set)}
        )
        return in_file.then(self.overrides.get("*", StageOverride())).then(
            self.overrides.get(ref.name, StageOverride())
        )

    def config(self, pipeline: PipelineConfig, name: str, extra: dict | None = None) -> StageConfig:
        """The stage's config with every override applied; `extra` (a caller's own values, merged last)
        is read anew, the rest once."""
        if extra:
            return load_stage_config(pipeline, name, self.override(pipeline.stage(name)).then(StageOverride(extra)))
        if name not in self._configs:
            self._configs[name] = load_stage_config(pipeline, name, self.override(pipeline.stage(name)))
        return self._configs[name]


def open_pipeline(
    path: str,
    store_override: str | None = None,
    overrides: list[str] = (),
    stage: str | None = None,
    existing_store: bool = False,
) -> tuple[PipelineConfig, Store, StageSettings]:
    """Load the pipeline config with its `--set` keys applied (see route_overrides), open its store, and
    return the stages' overrides beside them. existing_store: the command only reads or updates a store
    (promote, card), so a local store directory that does not exist is a mistyped --store, not an empty line."""
    pipeline_override, stage_overrides = route_overrides(list(overrides), stage)
    pipeline = load_yaml_config(path, PipelineConfig, pipeline_override.values, pipeline_override.origins)
    for name in set(stage_overrides) - {"*"}:
        pipeline.stage(name)  # the one-line unknown-stage error
    check_inputs(pipeline.sweep)  # the bench files, checked now, not after training and MMLU scoring
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
    settings = StageSettings(str(resolve_path(path)), stage_overrides)
    return pipeline.model_copy(update={"store": store_uri}), Store.open(store_uri), settings


def load_stage_config(pipeline: PipelineConfig, name: str, override: StageOverride) -> StageConfig:
    ref = pipeline.stage(name)
    config = resolve_path(ref.config)
    if not config.is_file():
        raise UserError(
            f"stage {name}: its config file {config} does not exist (the pipeline's stages: {name}: config)"
        )
    cfg = load_yaml_config(config, StageConfig, override.values, override.origins)
    if cfg.stage != name:
        raise UserError(f"{ref.config}: declares stage {cfg.stage!r} but the pipeline lists it as {name!r}")
    return cfg


def check_local_cluster(pipeline: PipelineConfig) -> None:
    """A cluster this process will start on its own machine (no RAY_ADDRESS: not `ray job submit`, not a
    running cluster) cannot place more CPU workers than the machine has cores: Ray would wait forever."""
    import os

    c = pipeline.cluster
    if os.environ.get("RAY_ADDRESS") or c.use_gpu:
        return
    cores = os.cpu_count() or 1
    if c.workers * c.cpus_per_worker > cores:
        raise UserError(
            f"cluster.workers {c.workers} × cluster.cpus_per_worker {c.cpus_per_worker:g} CPUs is more than this "
            f"machine's {cores} cores, and the local Ray cluster could never place them (set RAY_ADDRESS to use "
            f"a bigger cluster)"
        )


def check_before_launch(
    pipeline: PipelineConfig, names: list[str], store: Store, stages: StageSettings, probe_store: bool = True
) -> None:
    """What can be checked without training is checked before any Ray worker starts: every stage
    config that will run, its DeepSpeed config (against DeepSpeed's own model), its builder configs,
    and (probe_store) that the store takes a write."""
    from slm.ds_config import load_ds_config
    from slm.engine import check_runnable, check_train_extra
    from slm.orchestration.evaluate import check_settings

    check_settings(pipeline)
    check_local_cluster(pipeline)
    if pipeline.merge.enabled:
        require_extra("mergekit", "merge", "merge.enabled (SLERP candidates in the sweep)")
    for name in names:
        cfg = stages.config(pipeline, name)
        load_ds_config(cfg.deepspeed, pipeline.cluster.use_gpu, cfg.train, pipeline.cluster.workers)
        check_train_extra(cfg.train, str(resolve_path(pipeline.stage(name).config)))
        check_runnable(cfg.train, pipeline.cluster.use_gpu, str(resolve_path(pipeline.stage(name).config)))
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


def record_experiment(
    pipeline: PipelineConfig, store: Store, record: RunRecord, cfg: StageConfig, judged: dict
) -> ExperimentVerdict:
    verdict = ExperimentVerdict.model_validate(
        {
            **cfg.experiment.model_dump(),
            "stage": cfg.stage,
            "run_id": record.run_id,
            "run_record": layout.run_record(record.run_prefix),
            **judged,
            "decided_at": records.now(),
        }
    )
    record.experiment = verdict
    write_record(store, record)
    store.write_json(layout.experiment_verdict(pipeline.line, record.run_id), verdict.to_json())
    log(f"[{cfg.stage}] experiment {verdict.name} {verdict.status}: {verdict.reason}")
    return verdict


def record_not_promoted(pipeline: PipelineConfig, store: Store, record: RunRecord, selection) -> NotPromoted:
    """The gate kept the stage's champion out: say so in the run record, the line, and the log, and
    name what the line's next stage starts from instead."""
    stage = record.stage
    verdict = NotPromoted(
        status="not promoted",
        stage=stage,
        run_id=record.run_id,
        candidate=selection.champion,
        reason=selection.gate.reason,
        gate=selection.gate.to_json(),
        judged=gate_record(selection.gate),
        run_record=layout.run_record(record.run_prefix),
        decided_at=records.now(),
        overrule=f"python launch/promote.py {record.run_prefix} --reason '...'",
    )
    record.promotion = verdict
    write_record(store, record)
    store.write_json(layout.not_promoted(pipeline.line, stage), verdict.to_json())
    log(f"[{stage}] {selection.champion} {verdict.reason}")
    pointer = records.read_pointer(store, pipeline.line)
    if pointer:
        log(
            f"[{stage}] the line's champion stays {pipeline.line}@{pointer.version}; stages that start from "
            f"champion:{pipeline.line} start from it"
        )
    else:
        log(f"[{stage}] the line {pipeline.line} has no champion yet; to promote anyway: {verdict.overrule}")
    return verdict


def run_stage(
    pipeline: PipelineConfig,
    name: str,
    store: Store,
    overrides: dict | None = None,
    train_only: bool = False,
    stages: StageSettings | None = None,
) -> dict:
    """Train (or resume, or find finished) one stage, then sweep, select and promote its champion.
    `stages`: the command's stage overrides (open_pipeline); `overrides`: a caller's own, merged last."""
    cfg = (stages or StageSettings()).config(pipeline, name, overrides)
    record = train(pipeline, cfg, store)
    if train_only:
        return {"record": record}
    incumbent = experiment_incumbent(pipeline, name, store) if cfg.experiment else None
    champion, selection, precursor = sweep_and_select(pipeline, record, store, incumbent)
    if cfg.experiment:
        verdict = record_experiment(pipeline, store, record, cfg, selection.experiment)
        if verdict.status == "rejected":
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
