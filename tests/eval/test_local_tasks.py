"""lm-eval's own GSM8K and TruthfulQA tasks, offline, from the release files in ../shared/data."""

import pytest

from slm import REPO_ROOT
from slm.config import SweepSpec
from slm.errors import UserError
from slm.eval.local_data import hub_layout
from slm.eval.sweep import run_extra_tasks

SHARED = (REPO_ROOT / "../shared/data").resolve()
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
LOCAL = {"openai/gsm8k": str(SHARED / "gsm8k"), "truthfulqa/truthful_qa": str(SHARED / "truthfulqa")}


def test_converted_layouts_hold_every_item():
    from datasets import load_dataset

    gsm8k = load_dataset(str(hub_layout("openai/gsm8k", LOCAL["openai/gsm8k"])), "main", split="test")
    assert len(gsm8k) == 1319 and gsm8k[0]["answer"].split("#### ")[-1].strip().isdigit()
    tqa = load_dataset(
        str(hub_layout("truthfulqa/truthful_qa", LOCAL["truthfulqa/truthful_qa"])),
        "multiple_choice",
        split="validation",
    )
    assert len(tqa) == 817
    assert all(row["mc1_targets"]["labels"].count(1) == 1 for row in tqa)


def test_unknown_layout_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no converter for it"):
        hub_layout("allenai/ai2_arc", str(tmp_path))
    with pytest.raises(UserError, match="no such directory"):
        hub_layout("openai/gsm8k", str(tmp_path / "nope"))


def test_lm_eval_tasks_by_name_run_offline(tiny_model_dir):
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir(40, n_positions=1024)  # gsm8k generates up to 256 tokens
    lm = HFLM(
        pretrained=AutoModelForCausalLM.from_pretrained(path),
        tokenizer=AutoTokenizer.from_pretrained(path),
        batch_size=4,
    )
    spec = SweepSpec(extra_tasks=["gsm8k_zeroshot", "truthfulqa_mc1", "truthfulqa_mc2"], limit=3, local_datasets=LOCAL)
    results = run_extra_tasks(lm, spec)
    assert set(results) == {"gsm8k_zeroshot", "truthfulqa_mc1", "truthfulqa_mc2"}
    assert 0.0 <= results["truthfulqa_mc1"]["acc,none"] <= 1.0
    assert 0.0 <= results["truthfulqa_mc2"]["acc,none"] <= 1.0
    assert "exact_match,strict-match" in results["gsm8k_zeroshot"]


def test_few_shot_gsm8k_without_a_train_split_points_to_the_zero_shot_task():
    from slm.eval.local_data import check_tasks

    check_tasks(["gsm8k_zeroshot", "truthfulqa_mc1"], LOCAL)
    with pytest.raises(UserError, match="use the task gsm8k_zeroshot instead"):
        check_tasks(["gsm8k"], LOCAL)
