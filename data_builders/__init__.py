"""One data builder per stage: local input files → sharded datasets (Parquet + manifest) in the store.

A build is skipped when the dataset in the store was made from the same inputs: the same config,
input file checksums, builder version, and resolved tokenizer/teacher. Re-running a pipeline
therefore keeps its datasets, so its stages keep their run ids and resume instead of restarting.
"""

from __future__ import annotations

from importlib import import_module

from slm import layout
from slm.config import BuilderConfig, config_digest, load_yaml_config
from slm.data_builders.sources import Source
from slm.datasets import manifest_mismatch
from slm.errors import UserError
from slm.log import log
from slm.modeling import resolve_ref
from slm.refs import StoreRef
from slm.store import Store

# Builders whose rows are chat messages: they also mix in datasets already in the store.
CHAT_BUILDERS = ("sft", "surgical", "repair")


def build_digest(cfg: BuilderConfig, store: Store, version: str, config_path: str, evals=None) -> str:
    refs = {}
    for field in ("tokenizer", "teacher"):
        spec = getattr(cfg, field)
        if spec:
            ref = resolve_ref(spec, store, what=field)
            refs[field] = ref.location
            if isinstance(ref, StoreRef):
                refs[field + "_files"] = store.tree_manifest(ref.key)["files"]
    inputs = [Source(item, store, config_path).identity() for item in cfg.inputs]
    return config_digest(
        cfg, {"inputs": inputs, "version": version, "refs": refs, "evals": evals.digest if evals is not None else None}
    )


def run_builder(config_path: str, store: Store, evals=None, overrides: dict | None = None, force: bool = False) -> dict:
    """Build one dataset. `evals` (an EvalIndex: orchestration/eval_sets.py builds the pipeline's) is
    what rows are decontaminated against; the launchers always pass it. Without it the manifest says rows were
    not checked."""
    cfg = load_yaml_config(config_path, BuilderConfig, overrides)
    module = import_module(f"slm.data_builders.{cfg.builder}")
    for item in cfg.inputs:
        if item.dataset is not None:
            if cfg.builder not in CHAT_BUILDERS:
                raise UserError(
                    f"{config_path}: inputs: `dataset` ({item.dataset}) is read by the chat builders "
                    f"({', '.join(CHAT_BUILDERS)}), not by {cfg.builder}; give a `path`"
                )
            if not store.is_complete(item.dataset):
                raise UserError(
                    f"{config_path}: input dataset {item.dataset} not found (or incomplete) at "
                    f"{store.url(item.dataset)}; build it first (list its builder earlier)"
                )
    if evals is not None and (cfg.hygiene.ngram, cfg.hygiene.min_item_words) != (evals.n, evals.min_item_words):
        evals = type(evals)(evals.items, cfg.hygiene.ngram, cfg.hygiene.min_item_words, evals.sources)
    digest = build_digest(cfg, store, module.VERSION, config_path, evals if cfg.builder != "tokenizer" else None)
    if not force and store.is_complete(cfg.output):
        existing = store.tree_manifest(cfg.output)
        previous = (
            store.read_json(layout.dataset_manifest(cfg.output)) if "manifest.json" in existing["files"] else existing
        )
        problem = manifest_mismatch(existing["files"], previous) if "splits" in previous else None
        if previous.get("build_digest") == digest and not problem:
            log(f"[data] {store.url(cfg.output)} is up to date")
            return previous
        if problem:
            log(f"[data] {store.url(cfg.output)} does not match its manifest ({problem}); rebuilding it")
    manifest = module.build(cfg, store, digest, evals=evals, config_path=config_path)
    log(f"[data] wrote {store.url(cfg.output)}")
    return manifest
