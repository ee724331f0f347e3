"""Stage recipes, one file per training method (the protocol is in slm/recipe.py).

RECIPES maps every stage of the registry (slm.STAGES) to its recipe; the two cannot disagree.
"""

from slm import STAGE_ORDER
from slm.stages import distill, dpo, finetune, pretrain

RECIPES = {
    "pretrain": pretrain,
    "sft": finetune,
    "dpo": dpo,
    "distill": distill,
    "surgical": finetune,
    "repair": finetune,
}
if tuple(RECIPES) != STAGE_ORDER:
    raise ImportError(f"stages.RECIPES ({', '.join(RECIPES)}) must list slm.STAGES ({', '.join(STAGE_ORDER)})")
