"""Stage recipes, one file per training method; each exposes plan(StageConfig, StageContext) -> TrainJob."""
from stages import distill, dpo, finetune, pretrain

RECIPES = {"pretrain": pretrain, "sft": finetune, "dpo": dpo, "distill": distill, "surgical": finetune, "repair": finetune}
