"""Shared building blocks of the small-LM training pipeline: configs, store, engine, records."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGE_ORDER = ("pretrain", "sft", "distill", "surgical", "repair")
