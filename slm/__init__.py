"""The `slm` namespace, and its ground floor: configs, store, engine, records.

Every layer imports as `slm.<layer>`: slm.stages, slm.eval, slm.data_builders, slm.orchestration,
slm.launch (and the data-only slm.ds_configs). In a checkout those layers keep the user's layout
(stages/, eval/, ... beside slm/); in an installed wheel they are subpackages of slm (pyproject's
package-dir does the mapping). The modules directly in slm/ import no layer above them
(tests/test_layers.py walks the import graph and fails on an upward import or a cycle).
"""

from pathlib import Path

_HERE = Path(__file__).resolve().parent
LAYERS = ("stages", "eval", "data_builders", "orchestration", "launch", "ds_configs")

# A checkout: the layers lie beside slm/, so the package's search path takes in the checkout root
# (the same thing the editable install's finder does, but also for a plain `python launch/stage.py`
# and for the copy `ray job submit --working-dir` makes, so all of slm comes from one tree).
IN_CHECKOUT = not (_HERE / "orchestration").is_dir() and (_HERE.parent / "orchestration").is_dir()
if IN_CHECKOUT:
    __path__.append(str(_HERE.parent))

# Where the shipped configs, fixtures and data lie: the checkout root, or the installed package.
SHIPPED_ROOT = _HERE.parent if IN_CHECKOUT else _HERE
# Where relative paths the user gives resolve first, and where outputs (artifacts/) go by default.
PROJECT_ROOT = _HERE.parent if IN_CHECKOUT else Path.cwd()
REPO_ROOT = SHIPPED_ROOT  # the name the tests and benchmarks use for the shipped tree

# The one stage registry: every stage in pipeline order, with the objective its recipe trains.
# dpo is optional (the default pipeline leaves it out); where a pipeline lists it, it runs after sft.
# stages/__init__.py maps each name to its recipe and refuses to import if the two ever disagree.
STAGES = {
    "pretrain": "causal_lm",
    "sft": "chat_sft",
    "dpo": "dpo",
    "distill": "chat_sft",
    "surgical": "chat_sft",
    "repair": "chat_sft",
}
STAGE_ORDER = tuple(STAGES)
