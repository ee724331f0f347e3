"""Checks a stage makes in the driver before any worker starts."""

import importlib.util

import pytest

from slm.config import PipelineConfig, StageConfig, load_yaml_config
from slm.errors import UserError
from slm.recipe import StageContext
from slm.store import Store


@pytest.fixture
def ctx(tmp_path):
    pipeline = load_yaml_config("stages/pipeline.yaml", PipelineConfig)
    return StageContext(Store.open(str(tmp_path)), pipeline)


def test_kl_anchor_on_zero3_is_refused(ctx):
    cfg = load_yaml_config(
        "stages/configs/sft.yaml", StageConfig, {"kl_anchor": {"coef": 0.1}, "deepspeed": "ds_configs/zero3.json"}
    )
    with pytest.raises(UserError, match="ZeRO-3 .* would partition; use a ZeRO-2 config"):
        ctx.job(cfg, "stages.finetune", None, {})
    job = ctx.job(cfg.model_copy(update={"deepspeed": "ds_configs/zero2.json"}), "stages.finetune", None, {})
    assert job.kl_anchor.coef == 0.1


def test_wandb_follows_the_api_key(ctx, monkeypatch):
    cfg = load_yaml_config("stages/configs/sft.yaml", StageConfig)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert ctx.job(cfg, "stages.finetune", None, {}).wandb_project is None
    monkeypatch.setenv("WANDB_API_KEY", "not-a-real-key")
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(UserError, match="WANDB_API_KEY is set but the wandb package is not installed"):
            ctx.job(cfg, "stages.finetune", None, {})
    else:
        assert ctx.job(cfg, "stages.finetune", None, {}).wandb_project == "tiny-ff"


def test_a_warmup_as_long_as_the_run_is_said_not_refused():
    from slm.config import TrainSpec
    from slm.recipe import schedule_warnings

    smoke = TrainSpec(lr=3e-4, save_steps=2, micro_batch=1, warmup_steps=5, max_steps=4)
    assert schedule_warnings(smoke) == [
        "warmup_steps 5 is not below max_steps 4: the learning rate rises for the whole run and never reaches "
        "train.lr 0.0003"
    ]
    assert schedule_warnings(smoke.model_copy(update={"max_steps": 6})) == []
    assert schedule_warnings(smoke.model_copy(update={"max_steps": -1})) == []  # epochs: the length is the data's


def test_epochs_beside_max_steps_is_said_with_which_one_wins():
    from slm.config import TrainSpec
    from slm.recipe import schedule_warnings

    both = TrainSpec(lr=1e-3, save_steps=10, micro_batch=1, epochs=3, max_steps=90)
    assert schedule_warnings(both) == ["epochs 3 is set but max_steps 90 decides the run's length (it wins)"]
    assert schedule_warnings(TrainSpec(lr=1e-3, save_steps=10, micro_batch=1, max_steps=90)) == []
    assert schedule_warnings(TrainSpec(lr=1e-3, save_steps=10, micro_batch=1, epochs=3)) == []
