"""Parity: our MMLU (CSV tasks through lm-eval) equals the `lm_eval` CLI's own `mmlu` tasks.

The CLI reads lm-eval's built-in tasks from a local copy of the data laid out as the `cais/mmlu`
hub dataset (offline); we read the original CSVs. Same tiny model, same items.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slm import REPO_ROOT
from slm.eval import mmlu

DATA = (REPO_ROOT / "../shared/data/mmlu").resolve()
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/mmlu not present")


def lm_eval_cli(model_dir: Path, workdir: Path, tasks: str, limit: int, shots: int) -> tuple[dict, dict]:
    """Run the CLI; return (results, per-task {doc_id: acc})."""
    out = workdir / f"out-{shots}"
    cmd = [
        str(Path(sys.executable).parent / "lm_eval"),
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model_dir},dtype=float32",
        "--tasks",
        tasks,
        "--limit",
        str(limit),
        "--num_fewshot",
        str(shots),
        "--device",
        "cpu",
        "--batch_size",
        "16",
        "--log_samples",
        "--output_path",
        str(out),
    ]
    proc = subprocess.run(
        cmd,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    return results, mmlu.read_cli_samples(out)


def ours(model_dir: Path, subjects, limit, shots, tmp_path):
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    lm = HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(model_dir), batch_size=16)
    return mmlu.evaluate(lm, DATA, subjects, tmp_path / f"tasks-{shots}", limit=limit, num_fewshot=shots)


@pytest.fixture(scope="module")
def hub_copy(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lm_eval_cli")
    mmlu.write_hub_layout(DATA, workdir / "cais" / "mmlu", list(mmlu.SUBJECT_DOMAINS))
    return workdir


def test_zero_shot_group_parity_on_all_57_subjects(tiny_model_dir, hub_copy, tmp_path):
    model = tiny_model_dir(30)
    cli, cli_items = lm_eval_cli(model, hub_copy, "mmlu", limit=2, shots=0)
    result = ours(model, list(mmlu.SUBJECT_DOMAINS), 2, 0, tmp_path)
    assert result["n"] == 114
    assert result["acc"] == pytest.approx(cli["mmlu"]["acc,none"], abs=1e-12)
    assert result["se"] == pytest.approx(cli["mmlu"]["acc_stderr,none"], abs=1e-12)
    for domain, values in result["domains"].items():
        assert values["acc"] == pytest.approx(cli[f"mmlu_{domain}"]["acc,none"], abs=1e-12)
    for subject in mmlu.SUBJECT_DOMAINS:
        assert result["items"][subject] == [cli_items[f"mmlu_{subject}"][i] for i in range(2)], subject


def test_five_shot_parity_uses_the_dev_split(tiny_model_dir, hub_copy, tmp_path):
    model = tiny_model_dir(31, n_positions=1024)
    subjects = ["astronomy", "high_school_geography", "world_religions"]
    cli, cli_items = lm_eval_cli(model, hub_copy, ",".join(f"mmlu_{s}" for s in subjects), limit=4, shots=5)
    result = ours(model, subjects, 4, 5, tmp_path)
    for subject in subjects:
        assert result["subjects"][subject]["acc"] == pytest.approx(cli[f"mmlu_{subject}"]["acc,none"])
        assert result["items"][subject] == [cli_items[f"mmlu_{subject}"][i] for i in range(4)]
