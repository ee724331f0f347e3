"""A Ray Train worker SIGKILLed after the first checkpoint reached the store: the stage finishes by
itself (Ray's FailureConfig restarts the group, which resumes from the newest complete checkpoint)
and ends where an uninterrupted run with the same seed ends."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from slm import REPO_ROOT
from slm.store import Store

pytestmark = pytest.mark.slow
OVERRIDES = ["--set", "model.architecture={model_type: gpt2, n_layer: 2, n_embd: 64, n_head: 2, n_positions: 256}",
             "--set", "train.max_steps=120", "--set", "train.save_steps=30", "--set", "data.eval_split=null"]


def start_stage(store, tmp_path):
    env = {**os.environ, "SLM_CACHE": str(tmp_path / f"cache-{store.name}")}
    subprocess.run([sys.executable, "launch/build_data.py", "pretrain", "--store", str(store)], cwd=REPO_ROOT,
                   check=True, capture_output=True, env=env)
    return subprocess.Popen([sys.executable, "launch/stage.py", "pretrain", "--train-only", "--store", str(store),
                             *OVERRIDES], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def train_workers():
    return [p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]


def finished_run(store):
    s = Store.open(str(store))
    (run_id,) = s.children("runs/pretrain")
    prefix = f"runs/pretrain/{run_id}"
    return s, prefix, s.read_json(f"{prefix}/record.json")


def test_worker_killed_after_first_checkpoint_resumes_and_matches(tmp_path):
    reference = start_stage(tmp_path / "reference", tmp_path)
    out, _ = reference.communicate(timeout=900)
    assert reference.returncode == 0, out[-3000:]

    interrupted = tmp_path / "interrupted"
    proc = start_stage(interrupted, tmp_path)
    first = None
    deadline = time.time() + 600
    while first is None and time.time() < deadline and proc.poll() is None:
        run_dirs = list((interrupted / "runs" / "pretrain").glob("*/checkpoints/checkpoint-*/_COMPLETE.json"))
        first = run_dirs[0] if run_dirs else None
        time.sleep(0.05)
    assert first is not None, "no checkpoint reached the store"
    victims = train_workers()
    assert victims, "no Ray Train worker process found"
    os.kill(victims[0].pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]

    store, prefix, record = finished_run(interrupted)
    _, ref_prefix, ref_record = finished_run(tmp_path / "reference")
    assert record["status"] == "finished" and record["engine"]["resumed_from"], record["engine"]
    assert record["engine"]["resumed_from"].endswith(first.parent.name)
    assert record["engine"]["global_step"] == 120
    last, ref_last = record["training"]["last_loss"], ref_record["training"]["last_loss"]
    assert abs(last - ref_last) / ref_last < 0.01, (last, ref_last)

    a = load_file(interrupted / prefix / "checkpoints/checkpoint-120/model.safetensors")
    b = load_file(tmp_path / "reference" / ref_prefix / "checkpoints/checkpoint-120/model.safetensors")
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4) for k in a)
