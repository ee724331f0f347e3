"""The drift set: how far a candidate moved from its input model on ordinary prompts.

The input model (the gate's reference) answers each drift prompt greedily; those replies are the
references. Every other candidate is teacher-forced on the same references and its mean per-token
log-probability of each is kept. Paired per prompt against the input model's own, the difference
estimates −KL(input ‖ candidate) on text the input model itself writes: a model that forgot how it
used to answer finds its old answers less likely, whatever it now generates. The prompts are a
shipped file that no builder reads (eval/benches/drift_prompts.jsonl).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from slm.chat import prompt_text
from slm.errors import UserError
from slm.jsonl import read_objects

MAX_PROMPTS = 2_000
MAX_PROMPT_CHARS = 4000


def load_drift(path: str | Path) -> list[dict]:
    """`{"id", "prompt"}` per line: unique ids, non-empty prompts, nothing else."""
    file = Path(path)
    rows = read_objects(file, what="drift set")
    if len(rows) > MAX_PROMPTS:
        raise UserError(f"{file}: {len(rows):,} prompts; a drift set is at most {MAX_PROMPTS:,}")
    seen, items = set(), []
    for number, row in rows:
        where = f"{file}:{number}"
        unknown = set(row) - {"id", "prompt"}
        if unknown:
            raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (a drift prompt is id and prompt)")
        for key in ("id", "prompt"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise UserError(f"{where}: `{key}` must be a non-empty string")
        if len(row["prompt"]) > MAX_PROMPT_CHARS:
            raise UserError(f"{where}: a prompt of {len(row['prompt']):,} characters (at most {MAX_PROMPT_CHARS:,})")
        if row["id"] in seen:
            raise UserError(f"{where}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        items.append(row)
    return items


def references_digest(references: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(references, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def run_drift(
    model,
    tokenizer,
    items: list[dict],
    max_new_tokens: int,
    batch_size: int = 16,
    template: str | None = None,
    references: dict[str, str] | None = None,
) -> dict:
    """The model's own greedy replies and its per-token log-probability of `references` (None: of its
    own replies). `own` says whether the references are its own replies."""
    from slm.eval.bench import greedy_answers, reply_logprobs

    answers = greedy_answers(model, tokenizer, [it["prompt"] for it in items], max_new_tokens, batch_size, template)
    own = {it["id"]: a for it, a in zip(items, answers)}
    refs = own if references is None else references
    missing = [it["id"] for it in items if it["id"] not in refs]
    if missing:
        raise UserError(f"drift set: the references have no reply for {', '.join(missing[:5])} (a changed drift file?)")
    pairs = [(prompt_text(tokenizer, it["prompt"], template=template), refs[it["id"]]) for it in items]
    logprobs = reply_logprobs(model, tokenizer, pairs, batch_size)
    return {
        "answers": own,
        "references": references_digest({it["id"]: refs[it["id"]] for it in items}),
        "own": references is None or all(refs[it["id"]] == own[it["id"]] for it in items),
        "logprob": {it["id"]: lp for it, lp in zip(items, logprobs) if lp is not None},
    }
