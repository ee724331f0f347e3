"""The engine's account of what it runs: the optimizer named in records and cards."""

from slm.ds_config import load_ds_config
from slm.engine import optimizer_name


def test_the_optimizer_named_is_the_one_configured():
    assert (
        optimizer_name(load_ds_config("ds_configs/zero2.json", use_gpu=False))
        == "AdamW (DeepSpeed with torch's implementation)"
    )
    offload = load_ds_config("ds_configs/zero2_offload.json", use_gpu=True)
    assert "offloaded to cpu" in optimizer_name(offload)
    assert optimizer_name({"zero_optimization": {"stage": 2}}) == "AdamW (HF Trainer default, torch)"


def test_an_impossible_zero_stage_is_refused_in_the_driver(tmp_path):
    import json

    import pytest

    from slm.ds_config import load_ds_config
    from slm.errors import UserError

    config = tmp_path / "zero7.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 7}}))
    with pytest.raises(
        UserError, match=r"zero7.json: zero_optimization.stage is 7; DeepSpeed's ZeRO stages are 0, 1, 2 and 3"
    ):
        load_ds_config(str(config), use_gpu=False)
