"""Stage recipes, one file per training method; each exposes plan(StageConfig, StageContext) -> TrainJob."""
from stages import distill, finetune, pretrain

RECIPES = {"pretrain": pretrain, "sft": finetune, "distill": distill, "surgical": finetune, "repair": finetune}
