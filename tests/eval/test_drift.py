"""The drift set: its file checked before anything runs, and the signal it gives on real (tiny) models:
a model scored on its own replies, another on those same replies, and the pairing the gate relies on."""

import json

import pytest

from slm.errors import UserError
from slm.eval import drift


def write(tmp_path, rows, name="drift.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([], "drift.jsonl: no rows (empty drift set)"),
        ([{"id": "a", "prompt": "Hi", "truth": ["x"]}], "drift.jsonl:1: unknown key(s) truth"),
        ([{"id": "a", "prompt": " "}], "drift.jsonl:1: `prompt` must be a non-empty string"),
        ([{"id": "a", "prompt": "Hi"}, {"id": "a", "prompt": "Ho"}], "drift.jsonl:2: duplicate id 'a'"),
        ([{"id": "a", "prompt": "x" * 4001}], "a prompt of 4,001 characters"),
    ],
)
def test_a_bad_drift_file_is_refused_with_its_line(tmp_path, rows, expected):
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        drift.load_drift(write(tmp_path, rows))


def test_the_shipped_drift_prompts_load():
    from slm.config import resolve_path

    items = drift.load_drift(resolve_path("eval/benches/drift_prompts.jsonl"))
    assert len(items) == 40 and len({it["prompt"] for it in items}) == 40


def test_replies_are_teacher_forced_on_the_reference_and_pair_by_prompt(tiny_model_dir):
    import torch

    from slm.modeling import load_model, load_tokenizer

    items = [{"id": f"d{k}", "prompt": p} for k, p in enumerate(["Describe a river.", "What is rain?", "Hi!"])]
    path_a, path_b = tiny_model_dir(seed=21), tiny_model_dir(seed=22)
    tok = load_tokenizer(path_a)
    a, b = (load_model(p, dtype=torch.float32) for p in (path_a, path_b))
    own = drift.run_drift(a, tok, items, max_new_tokens=8, batch_size=2)
    assert own["own"] and set(own["answers"]) == {"d0", "d1", "d2"}
    assert own["references"] == drift.references_digest(own["answers"])
    again = drift.run_drift(a, tok, items, max_new_tokens=8, batch_size=2, references=own["answers"])
    assert again["own"] and again["logprob"] == own["logprob"]  # the same model on its own replies
    other = drift.run_drift(b, tok, items, max_new_tokens=8, batch_size=2, references=own["answers"])
    assert not other["own"] and other["references"] == own["references"]
    assert set(other["logprob"]) == set(own["logprob"]) and other["logprob"] != own["logprob"]
    # a reference reply for every prompt, or a clear line (a drift file edited between the two)
    with pytest.raises(UserError, match="no reply for d2"):
        drift.run_drift(b, tok, items, 8, 2, references={"d0": "x", "d1": "y"})
