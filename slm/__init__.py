"""The ground floor of the pipeline: configs, store, engine, records — imported by every layer above it.

`slm` imports nothing from `stages/`, `eval/`, `data_builders/`, `orchestration/` or `launch/`
(tests/test_layers.py walks the import graph and fails on an upward import or a cycle).
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# The one stage registry: every stage in pipeline order, with the objective its recipe trains.
# dpo is optional (the default pipeline leaves it out); where a pipeline lists it, it runs after sft.
# stages/__init__.py maps each name to its recipe and refuses to import if the two ever disagree.
STAGES = {"pretrain": "causal_lm", "sft": "chat_sft", "dpo": "dpo", "distill": "chat_sft",
          "surgical": "chat_sft", "repair": "chat_sft"}
STAGE_ORDER = tuple(STAGES)
