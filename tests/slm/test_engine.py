"""The engine's account of what it runs: the optimizer named in records and cards."""

import pytest

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


def _stage(store, tmp_path, stage, *overrides):
    import os
    import subprocess
    import sys

    from slm import REPO_ROOT

    env = {**os.environ, "SLM_CACHE": str(tmp_path / "cache")}
    build = [sys.executable, "launch/build_data.py", stage, "--store", str(store)]
    subprocess.run(build, cwd=REPO_ROOT, check=True, capture_output=True, env=env)
    command = [sys.executable, "launch/stage.py", stage, "--train-only", "--store", str(store), *overrides]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=900)


def _record(store, stage):
    from slm.store import Store

    s = Store.open(str(store))
    (run_id,) = s.children(f"runs/{stage}")
    return s, f"runs/{stage}/{run_id}", s.read_json(f"runs/{stage}/{run_id}/record.json")


def test_a_random_init_is_refused_at_step_0_by_every_worker_and_nothing_is_trained(tmp_path, tiny_model_dir):
    """A random init stands for weights that did not load: refused before the first step, on Ray Train's
    restart too (max_failures 1: the restarted group refuses from the first attempt's record)."""
    store = tmp_path / "store"
    proc = _stage(store, tmp_path, "sft", "--set", f"model.init={tiny_model_dir(43)}", "--set", "train.ema=null")
    assert proc.returncode == 2, proc.stderr[-3000:]
    (last,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]  # Ray prints tracebacks too
    assert last.startswith("error: sft: init gate refused the run: step-0 loss"), last
    assert "the first 64 training rows" in last and "max_loss 6" in last  # 4 micro-batches of 8 on 2 workers
    s, prefix, record = _record(store, "sft")
    assert record["status"] == "failed" and record["init_gate"]["passed"] is False
    assert record["attempts"][-1]["error"] == last.removeprefix("error: ")
    assert not s.children(f"{prefix}/checkpoints")  # not one step was taken
    assert len(s.children(f"{prefix}/train/starts")) == 2  # the first group and Ray Train's restart


def test_early_stopping_stops_the_run_and_says_where(tmp_path):
    """HF's EarlyStoppingCallback on the validation loss, through the engine: a min_delta no evaluation can
    beat stops the run after `patience` evaluations; the stop, the step-0 validation loss and perplexity
    are in the record, and the step it stopped at is a checkpoint the sweep sees."""
    import math

    store = tmp_path / "store"
    proc = _stage(
        store,
        tmp_path,
        "pretrain",
        "--set",
        "model.architecture={model_type: gpt2, n_layer: 1, n_embd: 32, n_head: 2, n_positions: 256}",
        "--set",
        "train.save_steps=5",
        "--set",
        "train.early_stopping={patience: 2, min_delta: 100}",
        "--set",
        "train.loss=chunked",  # the loss without full logits, through Ray Train and DeepSpeed (slm/losses.py)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    s, prefix, record = _record(store, "pretrain")
    stop = record["engine"]["stopped_early"]
    # evaluations at steps 0, 5, 10, 15: step 0 (HF's eval_on_start) is not a candidate best, step 5 sets
    # the best, 10 and 15 fail to beat it by 100
    assert stop["step"] == 15 and stop["planned_steps"] == 150 and record["engine"]["global_step"] == 15
    assert "early stopping at step 15 of 150" in proc.stderr
    evals = record["training"]["eval"]
    assert [e["step"] for e in evals] == [0, 5, 10, 15]
    assert all(e["perplexity"] == pytest.approx(math.exp(e["eval_loss"])) for e in evals)
    assert [int(k.rsplit("-", 1)[-1]) for k in record["checkpoints"]] == [5, 10, 15]
    assert record["config"]["train"]["loss"] == "chunked" and record["training"]["loss_fell"]
