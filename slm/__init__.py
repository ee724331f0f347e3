"""Shared building blocks of the small-LM training pipeline: configs, store, engine, records."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# dpo is optional (the default pipeline leaves it out); where a pipeline lists it, it runs after sft.
STAGE_ORDER = ("pretrain", "sft", "dpo", "distill", "surgical", "repair")
