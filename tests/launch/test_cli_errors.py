"""Bad input gets one clear line on stderr and exit status 2, before any Ray worker starts."""

import json
import os
import subprocess
import sys

import pytest

from slm import REPO_ROOT
from slm.store import Store


def run(*args, env=None):
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stderr.strip().splitlines()


@pytest.fixture
def store(tmp_path):
    return tmp_path / "store"


def one_line(code, lines, expected):
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


def test_unknown_stage(store):
    one_line(*run("launch/stage.py", "rlhf", "--store", str(store)), "unknown stage 'rlhf': choose one of pretrain")
    one_line(
        *run("launch/stage.py", "dpo", "--store", str(store)),
        "unknown stage 'dpo': this pipeline has pretrain, sft, distill, surgical, repair (dpo is optional: "
        "list it in the pipeline, as stages/examples/tiny-with-experiments.yaml does)",
    )


def test_unknown_config_key(store):
    code, lines = run("launch/stage.py", "repair", "--store", str(store), "--set", "train.lrr=1")
    one_line(code, lines, "--set train.lrr=1 (over ")  # blamed on what was typed, not on the file
    assert "stages/configs/repair.yaml): unknown key 'train.lrr'" in lines[0]
    code, lines = run("launch/pipeline.py", "--store", str(store), "--set", "cluster.gpus=8")
    one_line(code, lines, "--set cluster.gpus=8 (over ")
    assert "stages/pipeline.yaml): unknown key 'cluster.gpus'" in lines[0]


def test_missing_input_model(store, tmp_path):
    one_line(
        *run("launch/stage.py", "repair", "--store", str(store)),
        "no champion promoted yet from stage 'surgical' of line 'tiny-ff'",
    )
    code, lines = run("launch/stage.py", "sft", "--store", str(store), "--set", f"model.init={tmp_path / 'gone'}")
    one_line(code, lines, f"no such directory {tmp_path / 'gone'}")


def test_missing_dataset(store, tiny_model_dir):
    code, lines = run("launch/stage.py", "sft", "--store", str(store), "--set", f"model.init={tiny_model_dir(20)}")
    one_line(code, lines, "datasets/sft not found")


def test_empty_dataset(store, tiny_model_dir, tmp_path):
    # a dataset tree whose manifest declares an empty train split (e.g. written by another tool)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(
        json.dumps({"builder": "x", "splits": {"train": {"rows": 0, "shards": [], "columns": []}}})
    )
    Store.open(str(store)).put_tree(empty, "datasets/sft")
    code, lines = run("launch/stage.py", "sft", "--store", str(store), "--set", f"model.init={tiny_model_dir(21)}")
    one_line(code, lines, "datasets/sft is empty: its train split has no rows")


def test_empty_builder_input(store, tmp_path):
    src = tmp_path / "none.jsonl"
    src.write_text("")
    cfg = tmp_path / "b.yaml"
    cfg.write_text(f"builder: sft\ninputs: [{{path: {src}}}]\noutput: datasets/sft\n")
    one_line(*run("launch/build_data.py", str(cfg), "--store", str(store)), "none.jsonl: no rows (empty input)")


def test_pretrained_init_with_a_mismatched_architecture(store, tiny_model_dir):
    code, lines = run(
        "launch/stage.py",
        "sft",
        "--store",
        str(store),
        "--set",
        f"model.init={tiny_model_dir(22)}",
        "--set",
        "model.architecture={model_type: gpt2, n_layer: 12}",
    )
    one_line(code, lines, "architecture mismatch (n_layer: config says 12, checkpoint has 2)")


def test_ctrl_c_during_a_build_is_one_line_and_leaves_no_dataset_behind(store, tmp_path):
    import re
    import signal

    rows = tmp_path / "many.jsonl"
    with rows.open("w") as f:
        for i in range(150_000):
            f.write(json.dumps({"prompt": f"What is {i} plus one?", "response": f"{i + 1}."}) + "\n")
    cfg = tmp_path / "b.yaml"
    cfg.write_text(f"builder: sft\ninputs: [{{path: {rows}}}]\noutput: datasets/sft\n")
    proc = subprocess.Popen(
        [sys.executable, "launch/build_data.py", str(cfg), "--store", str(store)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "SLM_PROGRESS_EVERY_S": "0.2"},
    )
    # Interrupt on the first progress line that shows reading well short of done (an earlier version slept
    # 0.5 s after a 10 s tick, and on a faster machine the build had finished by then).
    seen = []
    for line in proc.stderr:
        seen.append(line)
        done = re.search(r"about (\d+)% of", line)
        if line.startswith("[data]") and done and int(done.group(1)) < 50:
            break
    else:
        raise AssertionError("no progress line under 50% before the build ended:\n" + "".join(seen[-20:]))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.strip().splitlines() if not line.startswith("[data]")]
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and len(lines) == 1, err[-2000:]
    assert lines[0].startswith("error: interrupted")
    assert not Store.open(str(store)).is_complete("datasets/sft")
