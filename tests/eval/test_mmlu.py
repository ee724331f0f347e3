"""MMLU from the original CSVs through real lm-eval, on a tiny model."""

import csv
import filecmp
from pathlib import Path

import pytest
import torch

from slm import REPO_ROOT
from slm.errors import UserError
from slm.eval import mmlu

DATA = (REPO_ROOT / "../shared/data/mmlu").resolve()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/mmlu not present")


@needs_data
def test_full_mmlu_has_14042_test_items_in_57_subjects():
    counts = mmlu.count_items(DATA, list(mmlu.SUBJECT_DOMAINS))
    assert len(counts) == 57 and sum(counts.values()) == mmlu.FULL_TEST_ITEMS
    assert sum(mmlu.count_items(DATA, list(mmlu.SUBJECT_DOMAINS), "dev").values()) == mmlu.FULL_DEV_ITEMS


@needs_data
def test_committed_task_yamls_are_the_generators_output(tmp_path):
    mmlu.write_tasks(Path("../shared/data/mmlu"), list(mmlu.SUBJECT_DOMAINS), tmp_path)
    committed = REPO_ROOT / "eval/tasks/mmlu_csv"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(p.name for p in committed.iterdir())
    mismatch = filecmp.cmpfiles(tmp_path, committed, names, shallow=False)[1]
    assert not mismatch, f"regenerate with `python -m eval.mmlu`: {mismatch}"


def test_unknown_subject_and_wrong_directory(tmp_path):
    with pytest.raises(UserError, match="unknown MMLU subject\\(s\\) astrology"):
        mmlu.select_subjects(["astrology"])
    with pytest.raises(UserError, match="astronomy_test.csv not found"):
        mmlu.count_items(tmp_path, ["astronomy"])


def direct_answers(model, tok, subject, limit, split="test"):
    """The letter with the highest log-likelihood after lm-eval's 0-shot prompt, computed by hand."""
    rows = list(csv.reader(open(DATA / split / f"{subject}_{split}.csv", newline="", encoding="utf-8")))[:limit]
    out = []
    for q, a, b, c, d, answer in rows:
        prompt = (
            f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
            f"{q.strip()}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:"
        )
        ctx = tok(prompt, add_special_tokens=False)["input_ids"]
        scores = []
        for letter in "ABCD":
            cont = tok(" " + letter, add_special_tokens=False)["input_ids"]
            ids = (ctx + cont)[-257:]
            with torch.no_grad():
                logits = model(torch.tensor([ids[:-1]])).logits[0].log_softmax(-1)
            scores.append(sum(logits[len(ids) - 1 - len(cont) + i, t].item() for i, t in enumerate(cont)))
        out.append(int("ABCD"[scores.index(max(scores))] == answer.strip()))
    return out


def tiny_lm(tiny_model_dir):
    """The tiny GPT-2 of seed 2 and its tokenizer, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir(2)
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    return model.eval(), tok


@needs_data
def test_lm_eval_scores_subjects_domains_and_items(tiny_model_dir, tmp_path):
    from lm_eval.models.huggingface import HFLM

    model, tok = tiny_lm(tiny_model_dir)
    subjects = ["astronomy", "philosophy", "marketing"]
    result = mmlu.evaluate(
        HFLM(pretrained=model, tokenizer=tok, batch_size=8), DATA, subjects, tmp_path / "tasks", limit=6
    )
    assert result["n"] == 18 and set(result["domains"]) == {"stem", "humanities", "other"}
    assert all(len(result["items"][s]) == 6 for s in subjects)
    flat = [x for s in subjects for x in result["items"][s]]
    assert result["acc"] == pytest.approx(sum(flat) / len(flat))  # size-weighted aggregation
    assert 0 < result["se"] < 0.2
    for subject in subjects:
        assert result["items"][subject] == direct_answers(model, tok, subject, 6)
        # the continuous signal keeps parity with acc: the correct choice is the likeliest exactly when acc is 1
        probs = result["probs"][subject]
        assert len(probs) == 6 and all(0 < p < 1 for p in probs)
        for p, correct in zip(probs, result["items"][subject]):
            # the largest of four shares is at least 1/4; one that another share exceeds is below 1/2
            assert p >= 0.25 if correct else p < 0.5


@needs_data
def test_the_dev_split_is_scored_0_shot_in_the_same_pass_and_leaves_the_test_scores_alone(tiny_model_dir, tmp_path):
    from lm_eval.models.huggingface import HFLM

    model, tok = tiny_lm(tiny_model_dir)
    subjects = ["astronomy", "philosophy", "marketing"]
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=8)
    runs = {
        dev: mmlu.evaluate(lm, DATA, subjects, tmp_path / f"tasks-{dev}", limit=4, num_fewshot=2, dev=dev)
        for dev in (False, True)
    }
    assert "dev" not in runs[False]
    assert {k: v for k, v in runs[True].items() if k != "dev"} == runs[False]  # the test split is untouched
    dev = runs[True]["dev"]
    by_hand = [x for s in subjects for x in direct_answers(model, tok, s, 4, split="dev")]  # 0-shot prompts
    assert dev["n"] == 12 and dev["acc"] == pytest.approx(sum(by_hand) / len(by_hand)) and dev["se"] > 0
