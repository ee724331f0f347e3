"""Word n-gram overlap between training text and evaluation items (decontamination checks).

An evaluation item is contaminated by a training row when they share a word n-gram (13 by default,
as in the GPT-3 paper and lm-eval's decontamination), after the bench's normalisation (case,
accents, punctuation). An item shorter than n words is matched whole: it counts when all its words
appear, in order and adjacent, in a training row. lm-eval's decontamination tool works on its own
archive format over the Pile, not on our rows, so this small version is written here.
"""
from __future__ import annotations

from collections.abc import Iterable

from slm.text import normalize


def ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def overlap_report(train_texts: Iterable[str], items: list[dict], n: int = 13) -> dict:
    """items: {id, text}. Returns {n, rows, items, contaminated: [{id, row, ngram}], longest_shared}.

    `longest_shared` is the longest word run any item shares with any row (how near the data comes
    to the evaluation, beyond the pass/fail of the n-gram test)."""
    item_words = {it["id"]: normalize(it["text"]).split() for it in items}
    wanted: dict[tuple[str, ...], list[str]] = {}
    for item_id, words in item_words.items():
        for gram in (ngrams(words, n) if len(words) >= n else {tuple(words)}):
            wanted.setdefault(gram, []).append(item_id)
    sizes = sorted({len(g) for g in wanted})
    contaminated: dict[str, dict] = {}
    longest = {"words": 0, "id": None, "row": None}
    rows = 0
    for row_index, text in enumerate(train_texts):
        rows += 1
        words = normalize(text).split()
        for size in sizes:
            for gram in ngrams(words, size):
                for item_id in wanted.get(gram, ()):
                    contaminated.setdefault(item_id, {"id": item_id, "row": row_index, "ngram": " ".join(gram)})
        for item_id, item in item_words.items():
            run = longest_common_run(words, item)
            if run > longest["words"]:
                longest = {"words": run, "id": item_id, "row": row_index}
    return {"n": n, "rows": rows, "items": len(items), "contaminated": sorted(contaminated.values(), key=lambda c: c["id"]),
            "longest_shared": longest}


def longest_common_run(a: list[str], b: list[str]) -> int:
    """Length of the longest run of words appearing adjacent and in order in both."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best
