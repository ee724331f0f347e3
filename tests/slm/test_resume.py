"""Preemption, for real: after the first checkpoint reached the store, (1) one Ray Train worker is
SIGKILLed: the stage finishes by itself (FailureConfig restarts the group, which resumes from the
newest complete checkpoint); (2) the whole job (driver, Ray, workers) is SIGKILLed and the same
command is run again: it resumes. Both end where an uninterrupted run with the same seed ends:
final loss within 1%, the same weights, the same MMLU-subset answers.

Storage hygiene runs all along (keep_optimizer_states=1): a checkpoint's DeepSpeed optimizer state is
pruned once a newer checkpoint is complete, so every resume above starts from the one checkpoint that
kept it; a finished run keeps it only in its last checkpoint, and the store shrinks by the rest."""

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
OVERRIDES = [
    "--set",
    "model.architecture={model_type: gpt2, n_layer: 2, n_embd: 64, n_head: 2, n_positions: 256}",
    "--set",
    "train.max_steps=120",
    "--set",
    "train.save_steps=30",
    "--set",
    "data.eval_split=null",
]


def start_stage(store, tmp_path):
    env = {**os.environ, "SLM_CACHE": str(tmp_path / f"cache-{store.name}")}
    subprocess.run(
        [sys.executable, "launch/build_data.py", "pretrain", "--store", str(store)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        env=env,
    )
    return subprocess.Popen(
        [sys.executable, "launch/stage.py", "pretrain", "--train-only", "--store", str(store), *OVERRIDES],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def train_workers():
    return [p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]


def wait_for_first_checkpoint(store_dir, proc):
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        found = list((store_dir / "runs" / "pretrain").glob("*/checkpoints/checkpoint-*/_COMPLETE.json"))
        if found:
            return found[0].parent
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint reached the store (exit {proc.poll()})")


def mmlu_answers(checkpoint_dir, task_dir):
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slm.eval import mmlu

    model = AutoModelForCausalLM.from_pretrained(checkpoint_dir)
    lm = HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(checkpoint_dir), batch_size=16)
    subjects = ["astronomy", "marketing"]
    result = mmlu.evaluate(lm, REPO_ROOT / "eval/data/mmlu", subjects, task_dir, limit=40)  # shipped subjects
    return result["items"]


def finished_run(store):
    s = Store.open(str(store))
    (run_id,) = s.children("runs/pretrain")
    prefix = f"runs/pretrain/{run_id}"
    return s, prefix, s.read_json(f"{prefix}/record.json")


def test_worker_or_whole_job_killed_after_first_checkpoint_resumes_and_matches(tmp_path):
    reference = start_stage(tmp_path / "reference", tmp_path)
    out, _ = reference.communicate(timeout=900)
    assert reference.returncode == 0, out[-3000:]

    ref_store, ref_prefix, ref_record = finished_run(tmp_path / "reference")
    storage = ref_record["storage"]
    steps = [30, 60, 90, 120]
    assert storage["resumable_checkpoints"] == [f"{ref_prefix}/checkpoints/checkpoint-120"]
    assert [p["checkpoint"].rsplit("-", 1)[1] for p in storage["pruned"]] == ["30", "60", "90"]
    for step in steps:
        on_disk = tmp_path / "reference" / ref_prefix / "checkpoints" / f"checkpoint-{step}"
        assert (on_disk / "model.safetensors").is_file()  # the weights stay for the sweep
        assert any(on_disk.glob("global_step*/*optim_states.pt")) == (step == 120)
    assert storage["bytes_freed"] == sum(p["bytes"] for p in storage["pruned"]) > 0
    assert storage["checkpoint_bytes"] + storage["bytes_freed"] > 1.5 * storage["checkpoint_bytes"], storage
    ref_final = tmp_path / "reference" / ref_prefix / "checkpoints/checkpoint-120"
    ref_answers = mmlu_answers(ref_final, tmp_path / "tasks")

    def assert_matches_reference(store_dir):
        store, prefix, record = finished_run(store_dir)
        assert record["status"] == "finished" and record["engine"]["global_step"] == 120, record["engine"]
        last, ref_last = record["training"]["last_loss"], ref_record["training"]["last_loss"]
        assert abs(last - ref_last) / ref_last < 0.01, (last, ref_last)
        final = store_dir / prefix / "checkpoints/checkpoint-120"
        a, b = load_file(final / "model.safetensors"), load_file(ref_final / "model.safetensors")
        assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4) for k in a)
        assert mmlu_answers(final, tmp_path / "tasks") == ref_answers
        return record

    # (1) one worker SIGKILLed: Ray Train restarts the group within the same job
    interrupted = tmp_path / "interrupted"
    proc = start_stage(interrupted, tmp_path)
    first = wait_for_first_checkpoint(interrupted, proc)
    victims = train_workers()
    assert victims, "no Ray Train worker process found"
    os.kill(victims[0].pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    record = assert_matches_reference(interrupted)
    assert record["engine"]["resumed_from"].endswith(first.name)
    starts = record["worker_group_starts"]
    assert [s["attempt"] for s in starts] == [1, 1] and starts[0]["resume_from"] is None
    assert starts[1]["resume_from"].endswith(first.name)
    assert [a["status"] for a in record["attempts"]] == ["finished"]

    # (2) the whole job SIGKILLed (driver, Ray head, workers), then the same command run again
    preempted = tmp_path / "preempted"
    proc = start_stage(preempted, tmp_path)
    first = wait_for_first_checkpoint(preempted, proc)
    job = psutil.Process(proc.pid)
    tree = job.children(recursive=True) + [job]
    for p in tree:
        p.kill()
    psutil.wait_procs(tree, timeout=30)
    proc.communicate()
    assert not train_workers(), "a Ray Train worker outlived the killed job"
    store, prefix, half = finished_run(preempted)
    assert half["status"] == "running"
    from slm.checkpoints import resumable
    from slm.layout import complete_checkpoints

    complete = [key for _, key in complete_checkpoints(store, prefix)]
    assert [resumable(store, key) for key in complete] == [False] * (len(complete) - 1) + [True]

    proc = start_stage(preempted, tmp_path)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    assert "was interrupted; attempt 2 resumes from" in out
    record = assert_matches_reference(preempted)
    assert [a["status"] for a in record["attempts"]] == ["interrupted", "finished"]
    assert record["attempts"][1]["resume_from"] == record["engine"]["resumed_from"]
    assert int(record["engine"]["resumed_from"].rsplit("-", 1)[1]) >= int(first.name.rsplit("-", 1)[1])
    assert record["engine"]["resumed_from"] == complete[-1]  # the kept one
    assert [s["attempt"] for s in record["worker_group_starts"]] == [1, 2]
