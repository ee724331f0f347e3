"""Word n-gram overlap between training text and evaluation items (decontamination checks).

An evaluation item is contaminated by a training row when they share a word n-gram (13 by default,
as in the GPT-3 paper and lm-eval's decontamination), after the bench's normalisation (case,
accents, punctuation). An item shorter than n words is matched whole: it counts when all its words
appear, in order and adjacent, in a training row. lm-eval's decontamination tool works on its own
archive format over the Pile, not on our rows, so this small version is written here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from slm.text import normalize


def ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def overlap_report(train_texts: Iterable[str], items: list[dict], n: int = 13) -> dict:
    """items: {id, text}. Returns {n, rows, items, contaminated: [{id, row, ngram}], longest_shared}.

    `longest_shared` is the longest word run any item shares with any row (how near the data comes
    to the evaluation, beyond the pass/fail of the n-gram test)."""
    item_words = {it["id"]: normalize(it["text"]).split() for it in items}
    wanted: dict[tuple[str, ...], list[str]] = {}
    for item_id, words in item_words.items():
        for gram in ngrams(words, n) if len(words) >= n else {tuple(words)}:
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
    return {
        "n": n,
        "rows": rows,
        "items": len(items),
        "contaminated": sorted(contaminated.values(), key=lambda c: c["id"]),
        "longest_shared": longest,
    }


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


@dataclass
class EvalItem:
    eval_set: str  # mmlu, bench, or an lm-eval task name
    item_id: str
    text: str


class EvalIndex:
    """Every evaluation item the sweep scores, as word n-grams (items of n words or more) or whole
    (shorter items, down to `min_item_words`). A training text is contaminated when it contains one."""

    def __init__(self, items: list[EvalItem], n: int = 13, min_item_words: int = 4, sources: dict | None = None):
        self.items, self.n, self.min_item_words = items, n, min_item_words
        self.sources = sources or {}
        grams: dict[int, int] = {}
        self.short: dict[int, dict[int, int]] = {}  # length → {hash of the whole item: item index}
        self.too_short = 0
        for index, item in enumerate(items):
            words = normalize(item.text).split()
            if len(words) >= n:
                for i in range(len(words) - n + 1):
                    grams.setdefault(hash(tuple(words[i : i + n])), index)
            elif len(words) >= min_item_words:
                self.short.setdefault(len(words), {}).setdefault(hash(tuple(words)), index)
            else:
                self.too_short += 1
        keys = np.fromiter(grams.keys(), dtype=np.int64, count=len(grams))
        order = np.argsort(keys)
        self.gram_keys = keys[order]
        self.gram_items = np.fromiter(grams.values(), dtype=np.int64, count=len(grams))[order]
        self.first_words = {
            normalize(items[i].text).split()[0] for table in self.short.values() for i in table.values()
        }

    @property
    def digest(self) -> str:
        h = hashlib.sha256(json.dumps([self.n, self.min_item_words]).encode())
        for item in self.items:
            h.update(f"{item.eval_set}\0{item.item_id}\0{item.text}\0".encode())
        return h.hexdigest()[:16]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items:
            out[item.eval_set] = out.get(item.eval_set, 0) + 1
        return out

    def match(self, text: str) -> EvalItem | None:
        """The first evaluation item this text contains, or None."""
        words = normalize(text).split()
        n = self.n
        if len(words) >= n and len(self.gram_keys):
            hashes = np.fromiter((hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)), dtype=np.int64)
            pos = np.searchsorted(self.gram_keys, hashes)
            pos[pos == len(self.gram_keys)] = 0
            hit = np.nonzero(self.gram_keys[pos] == hashes)[0]
            if len(hit):
                return self.items[int(self.gram_items[pos[hit[0]]])]
        for i, word in enumerate(words):
            if word not in self.first_words:
                continue
            for length, table in self.short.items():
                if i + length <= len(words):
                    found = table.get(hash(tuple(words[i : i + length])))
                    if found is not None:
                        return self.items[found]
        return None
