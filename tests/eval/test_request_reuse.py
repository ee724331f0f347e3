"""A sweep builds and tokenizes MMLU requests once; later checkpoints reuse them with identical answers."""

import pytest

from slm import REPO_ROOT
from slm.eval import mmlu

DATA = (REPO_ROOT / "../shared/data/mmlu").resolve()
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/mmlu not present")
SUBJECTS = ["astronomy", "marketing"]


def test_second_checkpoint_reuses_requests_and_encodings(tiny_model_dir, tmp_path, monkeypatch):
    import lm_eval.caching.cache as request_cache
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slm.eval.lm import ReusableHFLM

    monkeypatch.setenv("SLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(request_cache, "PATH", str(tmp_path / "requests"))  # read at import time otherwise
    first, second = tiny_model_dir(50), tiny_model_dir(51)  # same tokenizer, different weights

    def run(path, reusable=True):
        model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        lm = (
            ReusableHFLM(pretrained=model, tokenizer=tok, batch_size=8, tokenizer_dir=path)
            if reusable
            else HFLM(pretrained=model, tokenizer=tok, batch_size=8)
        )
        result = mmlu.evaluate(
            lm, DATA, SUBJECTS, tmp_path / f"tasks-{path.name}-{reusable}", limit=5, cache_requests=reusable
        )
        return lm, result

    lm1, _ = run(first)
    assert lm1._new == 40  # 10 questions × 4 choices, tokenized once
    lm1.save_encodings()
    built = sorted(p.name for p in (tmp_path / "requests").iterdir())
    assert len(built) == 2  # one per subject

    lm2, reused = run(second)
    assert lm2._new == 0  # every encoding came from the first checkpoint's run
    assert sorted(p.name for p in (tmp_path / "requests").iterdir()) == built  # no new request builds
    _, fresh = run(second, reusable=False)
    assert reused["items"] == fresh["items"] and reused["acc"] == fresh["acc"]
