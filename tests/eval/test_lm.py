"""The sweep's lm-eval model gives HFLM's own log-likelihoods, number for number, with less work."""

import pytest
from lm_eval.api.instance import Instance

from slm import REPO_ROOT
from slm.eval import mmlu

DATA = (REPO_ROOT / "../shared/data/mmlu").resolve()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/mmlu not present")


def load(path, reusable: bool, batch_size=8):
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slm.eval.lm import ReusableHFLM

    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    if reusable:
        return ReusableHFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, tokenizer_dir=path)
    return HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)


def mmlu_requests(tmp_path, num_fewshot: int, limit: int) -> list[Instance]:
    tasks = mmlu.load_tasks(
        DATA, ["astronomy", "high_school_european_history"], tmp_path / f"t{num_fewshot}", num_fewshot
    )
    requests = []
    for task in tasks["tasks"].values():
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        requests += task.instances
    return requests


def free_text_requests() -> list[Instance]:
    """Multi-token continuations, shared contexts and a context longer than the model's 256 positions."""
    long_context = "The river runs past the old mill and the bridge. " * 60
    pairs = [
        ("The capital of France is", " Paris, on the Seine"),
        ("The capital of France is", " Lyon"),
        ("Water boils at", " one hundred degrees"),
        (long_context, " and then the sea."),
        (long_context, " A"),
    ]
    return [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]


@needs_data
@pytest.mark.parametrize("num_fewshot", [0, 5])
def test_same_log_likelihoods_as_hflm_on_mmlu(tiny_model_dir, tmp_path, monkeypatch, num_fewshot):
    monkeypatch.setenv("SLM_CACHE", str(tmp_path / "cache"))
    path = tiny_model_dir(60)
    requests = mmlu_requests(tmp_path, num_fewshot, limit=12)
    ours, theirs = load(path, True).loglikelihood(requests), load(path, False).loglikelihood(requests)
    assert len(ours) == len(requests) == 2 * 12 * 4
    assert ours == theirs  # exact floats and greedy flags, not approximately


def test_same_log_likelihoods_as_hflm_with_multi_token_continuations(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_CACHE", str(tmp_path / "cache"))
    path = tiny_model_dir(61)
    requests = free_text_requests()
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(path)(requests[-1].args[0])["input_ids"]) > 256  # truncated from the left
    ours, theirs = (
        load(path, True, batch_size=2).loglikelihood(requests),
        load(path, False, batch_size=2).loglikelihood(requests),
    )
    assert ours == theirs
    assert len({ll for ll, _ in ours}) == len(requests)  # distinct requests, distinct scores


@needs_data
def test_each_context_is_tokenized_once_per_document(tiny_model_dir, tmp_path, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    monkeypatch.setenv("SLM_CACHE", str(tmp_path / "cache"))
    calls = []
    original = HFLM.tok_encode
    monkeypatch.setattr(HFLM, "tok_encode", lambda self, s, *a, **k: calls.append(s) or original(self, s, *a, **k))
    requests = mmlu_requests(tmp_path, 0, limit=5)
    load(tiny_model_dir(62), True).loglikelihood(requests)
    # 10 documents × 4 choices: each context + answer once (40), each context alone once (10), not 4 times (40)
    assert len(requests) == 40 and len(calls) == 50
