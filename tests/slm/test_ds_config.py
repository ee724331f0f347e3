"""DeepSpeed JSON against the stage it trains: what agrees passes, what contradicts is one line."""

import json
from pathlib import Path

import pytest
import yaml

from slm import REPO_ROOT
from slm.config import StageConfig, TrainSpec, load_yaml_config
from slm.ds_config import load_ds_config
from slm.errors import UserError

STAGE_FILES = sorted((REPO_ROOT / "stages").rglob("*.yaml"))


def stage_configs() -> list[Path]:
    return [p for p in STAGE_FILES if "deepspeed" in (yaml.safe_load(p.read_text()) or {})]


@pytest.mark.parametrize("path", stage_configs(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_stage_config_in_the_repo_agrees_with_its_deepspeed_config(path):
    cfg = load_yaml_config(path, StageConfig)
    for workers in (1, 8):
        load_ds_config(cfg.deepspeed, use_gpu=False, train=cfg.train, workers=workers)


def test_stated_values_that_agree_with_the_stage_pass(tmp_path):
    train = TrainSpec(lr=2e-4, save_steps=10, micro_batch=4, grad_accum=3, max_grad_norm=0.5, precision="bf16")
    config = {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 3,
        "train_batch_size": 4 * 3 * 8,
        "gradient_clipping": 0.5,
        "bf16": {"enabled": True},
        "fp16": {"enabled": False},
        "optimizer": {"type": "AdamW", "params": {"lr": 2e-4, "weight_decay": 0.0}},
        "zero_optimization": {"stage": 2},
    }
    file = tmp_path / "ds.json"
    file.write_text(json.dumps(config))
    assert load_ds_config(str(file), use_gpu=True, train=train, workers=8)["train_batch_size"] == 96
    with pytest.raises(UserError, match=r"train_batch_size=96 but .* x 4 worker\(s\) gives 48"):
        load_ds_config(str(file), use_gpu=True, train=train, workers=4)


def test_a_train_optim_replaces_the_files_optimizer_so_its_values_are_not_compared(tmp_path):
    file = tmp_path / "ds.json"
    file.write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {"lr": 9.0}}, "zero_optimization": {}}))
    with pytest.raises(UserError, match="optimizer.params.lr=9.0"):
        load_ds_config(str(file), use_gpu=False, train=TrainSpec(lr=1e-3, save_steps=1, micro_batch=1), workers=1)
    train = TrainSpec(lr=1e-3, save_steps=1, micro_batch=1, optim="adafactor")
    assert "optimizer" not in load_ds_config(str(file), use_gpu=False, train=train, workers=1)


@pytest.mark.parametrize(
    "text, expect",
    [
        ('{"zero_optimization": {"stage": 2}, "gradient_clipping": Infinity}', "Infinity is not a JSON number"),
        ('{"zero_optimization": {"stage": 2, "stage": 3}}', "key 'stage' is given twice"),
        ('{"zero_optimization": {"stage": 2}, "optimizer": {"type": "NoSuchOpt"}}', "optimizer.type 'NoSuchOpt'"),
        ('{"zero_optimization": {"stage": 2}, "optimizer": {"type": "SGD"}}', None),  # a torch.optim class
        ('{"zero_optimization": {"stage": 2}, "wall_clock_breakdwn": true}', "'wall_clock_breakdwn'"),
    ],
)
def test_json_that_python_would_take_but_deepspeed_would_misread_is_refused(tmp_path, text, expect):
    file = tmp_path / "ds.json"
    file.write_text(text)
    train = TrainSpec(lr=1e-3, save_steps=1, micro_batch=1)
    if expect is None:
        load_ds_config(str(file), use_gpu=False, train=train, workers=1)
    else:
        with pytest.raises(UserError, match=expect):
            load_ds_config(str(file), use_gpu=False, train=train, workers=1)
