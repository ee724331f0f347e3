"""One data builder per stage: local input files → sharded datasets (Parquet + manifest) in the store."""
from __future__ import annotations

from importlib import import_module

from slm.config import BuilderConfig, load_yaml_config, resolve_path
from slm.store import Store

BUILDERS = ("tokenizer", "pretrain", "sft", "distill", "surgical", "repair")


def run_builder(config_path: str, store: Store, overrides: dict | None = None) -> dict:
    cfg = load_yaml_config(config_path, BuilderConfig, overrides)
    for item in cfg.inputs:
        if not resolve_path(item.path).is_file():
            from slm.errors import UserError

            raise UserError(f"{config_path}: input file not found: {resolve_path(item.path)}")
    module = import_module(f"data_builders.{cfg.builder}")
    return module.build(cfg, store)
