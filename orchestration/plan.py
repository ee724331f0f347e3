"""What a command would do, said before it does it: `--print-config` (the resolved, validated configs)
and `--dry-run` (the data it would build, the runs it would train, what the sweep would score and how
a champion would be promoted). Neither starts Ray nor writes to the store."""

from __future__ import annotations

import json
import os

import yaml

from slm import layout, refs
from slm.config import BuilderConfig, PipelineConfig, StageConfig, load_yaml_config, resolve_path
from slm.ds_config import load_ds_config
from slm.errors import UserError
from slm.eval import mmlu
from slm.eval.bench import load_bench
from slm.eval.drift import load_drift
from slm.modeling import resolve_ref
from slm.orchestration.stage import StageSettings
from slm.recipe import schedule_warnings
from slm.refs import HubRef
from slm.store import Store


def resolved_configs(pipeline: PipelineConfig, names: list[str], stages: StageSettings) -> dict:
    """The pipeline and each stage's config and builder configs, with every --set and default applied."""
    resolved = {}
    for name in names:
        ref = pipeline.stage(name)
        resolved[name] = {
            "config_file": str(resolve_path(ref.config)),
            "config": stages.config(pipeline, name).model_dump(mode="json"),
            "builders": {path: load_yaml_config(path, BuilderConfig).model_dump(mode="json") for path in ref.builders},
        }
    return {"pipeline": pipeline.model_dump(mode="json"), "stages": resolved}


def print_config(pipeline: PipelineConfig, names: list[str], stages: StageSettings) -> None:
    print(yaml.safe_dump(resolved_configs(pipeline, names, stages), sort_keys=False, allow_unicode=True), end="")


def _steps(cfg: StageConfig) -> str:
    t = cfg.train
    if t.max_steps > 0:
        wins = f" (max_steps wins over epochs: {t.epochs:g})" if "epochs" in t.model_fields_set else ""
        return f"{t.max_steps} optimizer steps{wins}"
    return f"{t.epochs:g} epoch(s)"


def _checkpoints(cfg: StageConfig) -> str:
    t = cfg.train
    if t.max_steps > 0:
        saves = t.max_steps // t.save_steps + (t.max_steps % t.save_steps > 0)
        return f"{saves} checkpoints (every {t.save_steps} steps and the last)"
    return f"a checkpoint every {t.save_steps} steps and at the end"


def sweep_plan(pipeline: PipelineConfig) -> str:
    s = pipeline.sweep
    subjects = mmlu.select_subjects(s.subjects)
    per = f"{s.limit} items each" if s.limit else "every item"
    parts = [f"MMLU ({len(subjects)} of 57 subjects, {per}, {s.num_fewshot}-shot, from {s.mmlu_dir})"]
    if s.bench:
        parts.append(f"the bench {s.bench} ({len(load_bench(resolve_path(s.bench)))} prompts)")
    if s.heldout:
        parts.append(f"the held-out bench {s.heldout} ({len(load_bench(resolve_path(s.heldout)))} prompts)")
    if s.drift:
        parts.append(f"the drift set {s.drift} ({len(load_drift(resolve_path(s.drift)))} prompts)")
    if s.extra_tasks:
        parts.append("lm-eval tasks " + ", ".join(s.extra_tasks))
    return " + ".join(parts)


def build_lines(configs: list[str], store: Store, force: bool = False) -> list[str]:
    lines = []
    for path in configs:
        b = load_yaml_config(path, BuilderConfig)
        state = (
            "new"
            if not store.is_complete(b.output)
            else "rebuilt (--force)"
            if force
            else "in the store; rebuilt only if its inputs changed"
        )
        sources = ", ".join(i.name or i.path or i.hf or i.dataset for i in b.inputs)
        lines.append(f"  build   {b.output} ({b.builder} builder, {state}) from {sources}")
    return lines


def model_shape(cfg: StageConfig, store: Store, made_here: bool):
    """The stage's model as a config, built without weights: from `architecture` (scratch; the vocabulary
    from the architecture or the tokenizer, if it exists yet) or the init's config.json (a local
    directory, a store tree, the local hub cache). (config, None), or (None, why it is not known yet)."""
    from transformers import AutoConfig

    from slm.modeling import load_tokenizer, scratch_config

    if cfg.model.init == refs.SCRATCH:
        spec, arch = cfg.model.tokenizer, cfg.model.architecture
        parsed = refs.parse(spec)
        pending = parsed.kind == "store" and not store.is_complete(parsed.key)  # built by this run
        if pending and "vocab_size" not in arch:
            return None, f"the tokenizer {spec} is built by this run"
        tokenizer = None if pending else load_tokenizer(resolve_ref(spec, store, what="tokenizer").materialize())
        return scratch_config(arch, tokenizer, cfg.data.max_length), None
    try:
        ref = resolve_ref(cfg.model.init, store)
    except UserError:
        if made_here:  # not there yet (a later run reads the one promoted before it)
            return None, f"{cfg.model.init} is promoted by an earlier stage of this run"
        raise
    if ref.kind == "store":
        raw = json.loads(Store.open(ref.store).read_bytes(layout.model_config(ref.key)))
        return AutoConfig.for_model(raw.pop("model_type"), **raw), None
    if isinstance(ref, HubRef):
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(ref.hf, "config.json", revision=ref.commit or ref.revision)
        if not isinstance(found, str):
            return None, f"{cfg.model.init} is not in the local hub cache"
        return AutoConfig.from_pretrained(os.path.dirname(found)), None
    return AutoConfig.from_pretrained(ref.location), None


def memory_line(pipeline: PipelineConfig, cfg: StageConfig, ds: dict, store: Store, made_here: bool) -> str:
    """The parameter count and the per-worker memory estimate (slm/memory.py); refuses a stage that
    cannot fit `cluster.gpu_memory_gb`."""
    from slm import memory
    from slm.init_checks import count_parameters

    config, why = model_shape(cfg, store, made_here)
    if config is None:
        return f"  memory  estimated when the model is known ({why})"
    parameters = count_parameters(config)
    t, c = cfg.train, pipeline.cluster
    zero = ds.get("zero_optimization", {})
    offload = (zero.get("offload_optimizer") or {}).get("device") not in (None, "none")
    estimate = memory.estimate(
        memory.Shape.of(config, parameters),
        t.micro_batch,
        cfg.data.max_length,
        c.workers,
        zero.get("stage", 0),
        t.precision,
        offload_optimizer=offload,
        gradient_checkpointing=t.gradient_checkpointing,
        scores_materialised=t.attn_implementation == "eager",
    )
    where = f"{c.workers} {'GPU' if c.use_gpu else 'CPU'} workers, ZeRO-{zero.get('stage', 0)}, {t.precision}"
    line = f"  memory  {memory.count(parameters)} parameters; {estimate.describe()} on {where}"
    if c.gpu_memory_gb and c.use_gpu:
        if estimate.total > c.gpu_memory_gb * memory.GB:
            raise UserError(
                f"{cfg.stage}: the estimate {estimate.total / memory.GB:.1f} GB per GPU does not fit "
                f"cluster.gpu_memory_gb {c.gpu_memory_gb:g} ({estimate.describe()}); lower train.micro_batch "
                f"(raise grad_accum to keep the batch), turn on train.gradient_checkpointing, or offload the "
                f"optimizer (ds_configs/zero2_offload.json)"
            )
        line += f", fits {c.gpu_memory_gb:g} GB"
    return line


def check_model_refs(pipeline: PipelineConfig, names: list[str], store: Store, stages: StageSettings) -> None:
    """Every model reference the stages will load, resolved as their run resolves it, without fetching
    weights: a champion that is not there, a store key, a directory without safetensors, an s3:// URL
    with credentials, a hub model that offline is not in the cache. A `champion:` of this line that an
    earlier stage of this same run will promote is not there yet, and is not asked for."""
    built: set[str] = set()  # store keys this run's builders will make (a tokenizer, say) before they are read
    for i, name in enumerate(names):
        cfg = stages.config(pipeline, name)
        built |= {load_yaml_config(b, BuilderConfig).output.strip("/") for b in pipeline.stage(name).builders}
        specs = [("model.init", cfg.model.init)] if cfg.model.init != refs.SCRATCH else []
        specs += [("model.tokenizer", cfg.model.tokenizer)] if cfg.model.init == refs.SCRATCH else []
        specs += [("logit_distill.teacher", cfg.logit_distill.teacher)] if cfg.logit_distill else []
        for field, spec in specs:
            if not spec:
                continue
            parsed = refs.parse(spec)
            if parsed.kind == "champion" and parsed.line == pipeline.line and i > 0:
                continue  # made by an earlier stage of this run
            if parsed.kind == "store" and parsed.key.strip("/") in built:
                continue
            what = f"{name} {field}"
            ref = resolve_ref(spec, store, what="tokenizer" if field == "model.tokenizer" else what)
            if isinstance(ref, HubRef) and os.environ.get("HF_HUB_OFFLINE") == "1":
                from huggingface_hub import try_to_load_from_cache

                if not isinstance(try_to_load_from_cache(ref.hf, "config.json", revision=ref.revision), str):
                    raise UserError(f"{what} {spec!r}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set")


def dry_run(
    pipeline: PipelineConfig, names: list[str], store: Store, stages: StageSettings, build: bool = True
) -> list[str]:
    """One paragraph per stage: data, training, sweep, promotion. Reads the store, writes nothing."""
    check_model_refs(pipeline, names, store, stages)
    lines = [
        f"pipeline {pipeline.line}: store {store.uri}, {pipeline.cluster.workers} workers "
        f"({'GPU' if pipeline.cluster.use_gpu else 'CPU'}), stages {', '.join(names)}"
    ]
    # promotion's own numbering (incomplete version directories count: versions are never reused)
    next_number = layout.version_number(layout.next_version(store, pipeline.line, names[0]))
    sweep = sweep_plan(pipeline)
    power = gate_power(pipeline) if pipeline.selection.gate.enabled else None  # the same for every stage
    for name in names:
        ref, cfg = pipeline.stage(name), stages.config(pipeline, name)
        ds = load_ds_config(cfg.deepspeed, pipeline.cluster.use_gpu, cfg.train, pipeline.cluster.workers)
        lines.append(f"\n[{name}] {cfg.description}".rstrip())
        lines += build_lines(ref.builders, store) if build else []
        t, world = cfg.train, pipeline.cluster.workers
        lines.append(
            f"  train   {cfg.objective} from {cfg.model.init} on {cfg.data.dataset} "
            f"(max_length {cfg.data.max_length}): {_steps(cfg)}, lr {t.lr:g} {t.schedule}, "
            f"batch {t.micro_batch}×{t.grad_accum}×{world} workers = {t.micro_batch * t.grad_accum * world} "
            f"sequences, {t.precision}, ZeRO-{ds['zero_optimization'].get('stage', 0)} ({cfg.deepspeed})"
        )
        extras = [k for k in ("kl_anchor", "lora", "logit_distill", "dpo", "experiment") if getattr(cfg, k)]
        extras += [
            f"{k} {v}"
            for k, v in (
                ("optim", t.optim),
                ("attn_implementation", t.attn_implementation),
                ("warmup_ratio", t.warmup_ratio),
            )
            if v
        ]
        extras += ["gradient_checkpointing"] * t.gradient_checkpointing
        extras += [f"loss {t.loss}"] * (t.loss != "standard")
        if cfg.stage != "dpo" and t.packing is not False:  # slm/packing.py decides per model when unset
            extras.append("packing" if t.packing else "packing where the model's masking supports it")
        extras += [f"{k}={v}" for k, v in t.extra.items()]
        if extras:
            lines.append(f"          with {', '.join(extras)}")
        lines += [f"  warning {w}" for w in schedule_warnings(t)]
        made_here = refs.parse(cfg.model.init).kind == "champion" and names.index(name) > 0
        made_here = made_here and refs.parse(cfg.model.init).line == pipeline.line
        lines.append(memory_line(pipeline, cfg, ds, store, made_here))
        lines.append(
            f"  save    {_checkpoints(cfg)}; optimizer states kept for the newest "
            f"{max(pipeline.keep_optimizer_states, 1)} while training, {pipeline.keep_optimizer_states} after"
        )
        merges = (
            f" + SLERP merges with the precursor (t = {', '.join(map(str, pipeline.merge.t))})"
            if pipeline.merge.enabled
            else ""
        )
        if pipeline.merge.enabled and pipeline.merge.average_last:
            merges += f" + the average of the last {pipeline.merge.average_last} checkpoints"
        if pipeline.merge.enabled and t.ema:
            merges += f" + the EMA of the weights (decay {t.ema.decay:g}) at the last checkpoint"
        precursor = " and the precursor" if pipeline.sweep.score_precursor else ""
        lines.append(f"  sweep   every checkpoint{precursor}{merges} on {sweep}")
        gate = pipeline.selection.gate
        lines.append(
            f"  promote the best on MMLU (margin {pipeline.selection.margin:g}, guarded: "
            f"{', '.join(pipeline.selection.guarded_domains) or 'none'}"
            f"{f', paired gate α={gate.alpha:g}' if gate.enabled else ''}) as "
            f"{pipeline.line}@{layout.version_name(next_number, name)}, with its card"
        )
        if power:
            lines.append(f"  power   {power}")
        next_number += 1
    return lines


def gate_power(pipeline: PipelineConfig) -> str:
    """What the gate's tests can see for the item counts configured, before anything is scored: the
    best case (every changed item a loss). The selection report states it again at the measured
    disagreement."""
    from collections import Counter

    from slm.eval.power import describe

    s, alpha = pipeline.sweep, pipeline.selection.gate.alpha
    parts = []
    if not mmlu.is_hub(s.mmlu_dir):
        counts = mmlu.count_items(resolve_path(s.mmlu_dir), mmlu.select_subjects(s.subjects))
        parts.append(f"MMLU {describe(sum(min(c, s.limit) if s.limit else c for c in counts.values()), alpha)}")
    for label, path in (("bench", s.bench), ("heldout", s.heldout)):
        if not path:
            continue
        items = load_bench(resolve_path(path))
        parts.append(f"{label} {describe(len(items), alpha)}")
        if pipeline.selection.gate.bench_categories:
            for category, n in sorted(Counter(i["category"] for i in items).items()):
                parts.append(f"{label}:{category} {describe(n, alpha)}")
    return f"the gate sees a drop (α = {alpha:g}, power 0.8, best case: every changed item a loss) of " + "; ".join(
        parts
    )
