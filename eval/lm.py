"""An lm-eval model wrapper that lets a sweep build and tokenize its requests once for all checkpoints.

lm-eval's request cache (`cache_requests=True`) stores the built requests under a key that includes
the tokenizer's name; HFLM names a tokenizer by its path, which differs for every checkpoint. Here
the name is the tokenizer's content checksum, so checkpoints that share a tokenizer share the
cache. Tokenizing the requests is lm-eval's other per-run cost; the (context, continuation)
encodings are kept in a file per tokenizer and reused by every later checkpoint.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

from lm_eval.models.huggingface import HFLM

from slm.modeling import tokenizer_digest
from slm.store import cache_dir


def request_cache_dir(settings_digest: str) -> Path:
    """Where lm-eval keeps built requests (set as LM_HARNESS_CACHE_PATH before lm_eval is imported)."""
    return cache_dir() / "lm_eval_requests" / settings_digest


def cache_compiled_templates() -> None:
    """Compile each lm-eval Jinja prompt template once per process instead of once per document.

    lm-eval's `utils.apply_template` calls `env.from_string` on every use; over full MMLU that is
    ~15,000 compilations per model, a quarter of a warm checkpoint's time on CPU. Rendering is
    unchanged (the same template object renders the same text), so the answers stay identical.
    """
    import functools

    from lm_eval import utils

    if getattr(utils.apply_template, "_slm_cached", False):
        return
    compiled = functools.lru_cache(maxsize=4096)(utils.env.from_string)

    def apply_template(template: str, doc: dict) -> str:
        return compiled(template).render(**doc)

    apply_template._slm_cached = True
    utils.apply_template = apply_template


class ReusableHFLM(HFLM):
    def __init__(self, *args, tokenizer_dir: Path, **kwargs):
        super().__init__(*args, **kwargs)
        cache_compiled_templates()
        digest = tokenizer_digest(Path(tokenizer_dir)) or str(tokenizer_dir)
        self._name = f"tok-{digest[:16]}"
        # The encodings depend on the tokenizer and on whether HFLM prepends BOS.
        self._file = cache_dir() / "lm_eval_tokens" / f"{self._name}-bos{int(bool(self.add_bos_token))}.pkl"
        # Our own cache directory holds these, as lm-eval's pickled request cache lives in its own.
        self._pairs = pickle.loads(self._file.read_bytes()) if self._file.is_file() else {}
        self._new = 0

    @property
    def tokenizer_name(self) -> str:
        return self._name

    def _encode_pair(self, context: str, continuation: str):
        key = (context, continuation)
        cached = self._pairs.get(key)
        if cached is None:
            cached = self._pairs[key] = super()._encode_pair(context, continuation)
            self._new += 1
        return cached

    def save_encodings(self) -> None:
        if not self._new:
            return
        self._file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._file.with_name(f".{self._file.name}.tmp-{os.getpid()}")
        tmp.write_bytes(pickle.dumps(self._pairs, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, self._file)
        self._new = 0
