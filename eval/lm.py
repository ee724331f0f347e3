"""An lm-eval model wrapper for sweeps: the same answers as lm-eval's HFLM, with less repeated work.

- Tokenizing is done once per tokenizer: the (context, continuation) encodings are kept in a file
  and reused by every later checkpoint, and within a run each context is encoded once, not once per
  answer choice.
- lm-eval's request cache (`cache_requests=True`) keys its entries by the tokenizer's name, which
  HFLM takes from the path; here the name is the tokenizer's content checksum, so checkpoints that
  share a tokenizer share the cache.
- Log-likelihoods are computed only where they are scored (see `_loglikelihood_tokens`).
"""

from __future__ import annotations

import inspect
import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import Collator
from lm_eval.models.utils_hf import pad_and_concat

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
    def __init__(self, *args, tokenizer_dir: Path, progress_bars: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        # Under Ray every progress-bar refresh becomes a log line; sweeps print a line per candidate instead.
        self._progress_bars = progress_bars
        cache_compiled_templates()
        digest = tokenizer_digest(Path(tokenizer_dir)) or str(tokenizer_dir)
        self._name = f"tok-{digest[:16]}"
        # The encodings depend on the tokenizer and on whether HFLM prepends BOS.
        self._file = cache_dir() / "lm_eval_tokens" / f"{self._name}-bos{int(bool(self.add_bos_token))}.pkl"
        # Our own cache directory holds these, as lm-eval's pickled request cache lives in its own.
        self._pairs = pickle.loads(self._file.read_bytes()) if self._file.is_file() else {}
        self._new = 0
        self._recent: dict[tuple, list[int]] = {}

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

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self._progress_bars)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm or not self._progress_bars)

    def generate_until(self, requests, disable_tqdm: bool = False):
        return super().generate_until(requests, disable_tqdm=disable_tqdm or not self._progress_bars)

    def tok_encode(self, string: str, add_special_tokens=None, left_truncate_len=None, **kwargs) -> list[int]:
        # lm-eval encodes a multiple-choice context once per choice, and the choices of a document
        # arrive together: a few recent results remembered make that once per document.
        if kwargs:
            return super().tok_encode(string, add_special_tokens, left_truncate_len, **kwargs)
        key = (string, add_special_tokens, left_truncate_len)
        if key not in self._recent:
            if len(self._recent) >= 64:
                self._recent.clear()
            self._recent[key] = super().tok_encode(string, add_special_tokens, left_truncate_len)
        return list(self._recent[key])

    def _scores_only_scored_positions(self) -> bool:
        return (
            self.backend == "causal"
            and self.logits_cache
            and self.batch_size != "auto"
            and self.AUTO_MODEL_CLASS is transformers.AutoModelForCausalLM
            and "logits_to_keep" in inspect.signature(self.model.forward).parameters
        )

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        """lm-eval's HFLM loop (same order, batches, truncation and greedy check), with the vocabulary
        projection and log-softmax done only at the scored positions.

        HFLM projects every position of every padded row onto the vocabulary and log-softmaxes it,
        then keeps one position per request on MMLU; with a small model that is a fifth of the
        forward time. transformers' `logits_to_keep` mask keeps the scored positions; the model
        body sees the same batches, so the log-likelihoods are the same numbers
        (tests/eval/test_lm.py compares them with HFLM's own).
        """
        if not self._scores_only_scored_positions():
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        from tqdm import tqdm

        re_ord = Collator(
            requests,
            sort_fn=lambda req: (-len(req[1] + req[2]), tuple(req[1] + req[2])),
            group_by="contexts",
            group_fn=lambda req: req[-2] + req[-1][:-1],
        )
        pbar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="Running loglikelihood requests")
        res = []
        for chunk in re_ord.get_batched(n=self.batch_size):
            inps, spans = [], []
            for _, context_enc, continuation_enc in chunk:
                assert context_enc and continuation_enc and len(continuation_enc) <= self.max_length
                inp = (context_enc + continuation_enc)[-(self.max_length + 1) :][:-1]
                inps.append(torch.tensor(inp, dtype=torch.long, device=self.device))
                spans.append((len(inp) - len(continuation_enc), len(inp)))
            batched = pad_and_concat(max(len(i) for i in inps), inps, padding_side="right")
            keep = torch.zeros(batched.shape, dtype=torch.bool, device=self.device)
            for row, (start, end) in enumerate(spans):
                keep[row, start:end] = True
            with (
                torch.no_grad(),
                torch.autocast(
                    device_type=self.device.type,
                    dtype=self.mixed_precision_dtype,
                    enabled=self.mixed_precision_dtype is not None,
                ),
            ):
                logits = self.model(batched, use_cache=False, logits_to_keep=keep).logits  # [kept, vocab]
            logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
            offset = 0
            for (pair, ctx_tokens, cont_toks), (start, end) in zip(chunk, spans, strict=True):
                scored = logprobs[offset : offset + end - start].unsqueeze(0)  # [1, cont, vocab]
                offset += end - start
                greedy_tokens = scored.argmax(dim=-1)
                # One forward serves every request of the group (the other answer choices of an MMLU item).
                for request_str, request_cont, request_logits in re_ord.get_cache(
                    req_str=pair, cxt_toks=ctx_tokens, cont_toks=cont_toks, logits=scored
                ):
                    cont = torch.tensor(request_cont, dtype=torch.long, device=self.device).unsqueeze(0)
                    max_equal = (greedy_tokens[:, -cont.shape[1] :] == cont).all()
                    logprob = torch.gather(request_logits, 2, cont.unsqueeze(-1)).squeeze(-1).sum()
                    answer = (float(logprob), bool(max_equal))
                    res.append(answer)
                    if request_str is not None:
                        self.cache_hook.add_partial("loglikelihood", request_str, answer)
                    pbar.update(1)
        pbar.close()
        return re_ord.get_original(res)

    def save_encodings(self) -> None:
        if not self._new:
            return
        self._file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._file.with_name(f".{self._file.name}.tmp-{os.getpid()}")
        tmp.write_bytes(pickle.dumps(self._pairs, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, self._file)
        self._new = 0
