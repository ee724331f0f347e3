"""Deduplication and decontamination of builder rows, in bounded memory.

Pass 1 (`Hygiene.add`, one call per row, as rows stream in): the row's normalised text gets an exact
hash, a MinHash signature (datasketch), and a check against the evaluation index (`EvalIndex`).
Hashes and signatures go to files on disk; memory keeps a byte or two per row.

Pass 2 (`Hygiene.finish`): which rows to keep. Exact duplicates are found by sorting the hashes; near
duplicates by cutting the signatures (read a chunk at a time) into LSH band keys, sorting each band's
keys (rows sharing one are MinHash LSH's candidates) and confirming candidates by the signatures'
estimated Jaccard similarity; the first row of every group is kept. datasketch's own `MinHashLSH` keeps its
index as Python dicts in memory (about 1.5 KB a row); sorting band keys on disk (what datatrove's
multi-stage MinHash does) keeps a million rows to tens of MB, so the banding here uses datasketch's
signatures and band parameters with that sort instead.
"""

from __future__ import annotations

import array
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slm.config import HygieneSpec
from slm.contamination import EvalIndex
from slm.text import normalize


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1  # fits int64


# --- pass 1 and 2 ---------------------------------------------------------------------------------


@dataclass
class SourceTally:
    rows_in: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    contaminated: dict = field(default_factory=dict)  # eval set → rows
    kept: int = 0
    samples: dict = field(default_factory=dict)  # reason → [{where, text, ...}]


class Hygiene:
    def __init__(self, spec: HygieneSpec, evals: EvalIndex | None, workdir: Path | None = None):
        from datasketch.lsh import _optimal_param

        self.spec, self.evals = spec, evals
        self._tmp = tempfile.TemporaryDirectory(dir=workdir)
        self.dir = Path(self._tmp.name)
        self.rows = 0
        self.source_of = array.array("i")
        self.contaminated = bytearray()
        self.exact = open(self.dir / "exact.bin", "wb")
        self.signatures = open(self.dir / "signatures.bin", "wb")
        # Candidates are verified against the signatures below, so the bands favour recall: a pair at the
        # threshold shares a band with probability ~0.8 (1 - (1 - s^r)^b), one at 0.9 with ~0.999.
        self.bands, self.rows_per_band = _optimal_param(spec.near_threshold, spec.num_perm, 0.1, 0.9)
        self.tallies: list[SourceTally] = []
        self.labels: list[str] = []
        self._pending: list[list[bytes]] = []

    def source(self, label: str) -> int:
        self.labels.append(label)
        self.tallies.append(SourceTally())
        return len(self.labels) - 1

    def _sample(self, tally: SourceTally, reason: str, entry: dict) -> None:
        kept = tally.samples.setdefault(reason, [])
        if len(kept) < self.spec.samples:
            kept.append(entry)

    def add(self, source: int, text: str, where: str) -> None:
        """Pass 1 for one row (its index is the order of the calls)."""
        tally = self.tallies[source]
        tally.rows_in += 1
        self.source_of.append(source)
        normal = normalize(text)
        self.exact.write(stable_hash(normal).to_bytes(8, "little", signed=False))
        hit = self.evals.match(text) if (self.spec.decontaminate and self.evals) else None
        self.contaminated.append(1 if hit else 0)
        if hit:
            tally.contaminated[hit.eval_set] = tally.contaminated.get(hit.eval_set, 0) + 1
            self._sample(
                tally,
                f"contaminated:{hit.eval_set}",
                {"where": where, "text": text[:300], "eval_item": hit.item_id, "eval_text": hit.text[:200]},
            )
        if self.spec.near_dedup:
            words = normal.split()
            k = self.spec.shingle_words
            self._pending.append([" ".join(words[i : i + k]).encode() for i in range(max(1, len(words) - k + 1))])
            if len(self._pending) >= 2048:
                self._flush_signatures()
        self.rows += 1

    def _flush_signatures(self) -> None:
        from datasketch import MinHash

        if self._pending:
            sigs = np.stack([m.hashvalues for m in MinHash.bulk(self._pending, num_perm=self.spec.num_perm, seed=1)])
            self.signatures.write(sigs.astype(np.uint32).tobytes())
            self._pending = []

    def finish(self) -> np.ndarray:
        """Pass 2: a boolean keep-mask over every row added, and the tallies filled in."""
        self._flush_signatures()
        self.exact.close()
        self.signatures.close()
        n = self.rows
        keep = np.frombuffer(bytes(self.contaminated), dtype=np.uint8) == 0 if n else np.zeros(0, bool)
        keep = keep.copy()
        source_of = np.frombuffer(self.source_of, dtype=np.int32) if n else np.zeros(0, np.int32)
        if self.spec.dedup and n:
            hashes = np.fromfile(self.dir / "exact.bin", dtype=np.uint64)
            dup = _later_in_group(hashes, among=keep)
            for s in np.nonzero(dup)[0]:
                self.tallies[source_of[s]].exact_duplicates += 1
            keep &= ~dup
        if self.spec.near_dedup and n:
            near = self._near_duplicates(n, keep)
            for s in np.nonzero(near)[0]:
                self.tallies[source_of[s]].near_duplicates += 1
            keep &= ~near
        for s, tally in enumerate(self.tallies):
            tally.kept = int(np.count_nonzero(keep[source_of == s])) if n else 0
        return keep

    def _near_duplicates(self, n: int, keep: np.ndarray) -> np.ndarray:
        """Rows whose signature agrees with an earlier kept row's on a whole band (LSH candidates),
        confirmed by the signatures' estimated Jaccard similarity."""
        sigs = np.memmap(
            self.dir / "signatures.bin", dtype=np.uint32, mode="r", shape=(n, self.spec.num_perm)
        )  # candidates only
        r, chunk = self.rows_per_band, 65536
        mix = np.random.default_rng(0).integers(1, 2**63 - 1, size=r, dtype=np.uint64) | np.uint64(1)
        near = np.zeros(n, bool)
        alive = keep.copy()
        width = self.spec.num_perm
        for b in range(self.bands):
            keys = np.empty(n, np.uint64)
            # A chunk of rows at a time, read (not mapped: mapped pages would count as this process's
            # memory, and every page is read once per band): memory stays flat as the corpus grows.
            for start in range(0, n, chunk):
                rows = min(chunk, n - start)
                block = np.fromfile(
                    self.dir / "signatures.bin", dtype=np.uint32, count=rows * width, offset=start * width * 4
                ).reshape(rows, width)[:, b * r : (b + 1) * r]
                keys[start : start + rows] = (block.astype(np.uint64) * mix).sum(axis=1, dtype=np.uint64)  # mod 2^64
            idx = np.nonzero(alive)[0]
            order = idx[np.lexsort((idx, keys[idx]))]
            same = np.nonzero(keys[order[1:]] == keys[order[:-1]])[0]
            for pos in same:
                first, later = order[pos], order[pos + 1]
                group_start = pos
                while group_start > 0 and keys[order[group_start - 1]] == keys[first]:
                    group_start -= 1
                for earlier in order[group_start : pos + 1][:8]:  # a few earlier members of the bucket
                    if not near[earlier] and np.mean(sigs[earlier] == sigs[later]) >= self.spec.near_threshold:
                        near[later] = True
                        break
            alive &= ~near
        del sigs
        return near & keep

    def close(self) -> None:
        self._tmp.cleanup()

    def report(self) -> dict:
        spec = self.spec
        return {
            "settings": spec.model_dump(),
            "lsh": (
                {"bands": self.bands, "rows_per_band": self.rows_per_band, "verified": "estimated Jaccard"}
                if spec.near_dedup
                else None
            ),
            "eval_sets": (
                {
                    "items": self.evals.counts(),
                    "sources": self.evals.sources,
                    "digest": self.evals.digest,
                    "too_short_to_match": self.evals.too_short,
                }
                if self.evals
                else "none given: rows were not checked against evaluations"
            ),
            "sources": {
                label: {
                    "rows_in": t.rows_in,
                    "exact_duplicates": t.exact_duplicates,
                    "near_duplicates": t.near_duplicates,
                    "contaminated": t.contaminated,
                    "kept": t.kept,
                    "samples": t.samples,
                }
                for label, t in zip(self.labels, self.tallies)
            },
        }

    def add_duplicate_samples(self, keep: np.ndarray, text_of) -> None:
        """Keep a few dropped duplicates per source as samples (text_of(row index) → (where, text))."""
        if not self.spec.samples:
            return
        source_of = np.frombuffer(self.source_of, dtype=np.int32)
        contaminated = np.frombuffer(bytes(self.contaminated), dtype=np.uint8) == 1
        for s, tally in enumerate(self.tallies):
            dropped = np.nonzero((source_of == s) & ~keep & ~contaminated)[0][: self.spec.samples]
            for i in dropped:
                where, text = text_of(int(i))
                self._sample(tally, "duplicate", {"where": where, "text": text[:300]})


def _later_in_group(keys: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
    """True for every row whose key an earlier row (among `among`, if given) already has."""
    n = len(keys)
    idx = np.arange(n) if among is None else np.nonzero(among)[0]
    if not len(idx):
        return np.zeros(n, bool)
    sub = keys[idx]
    order = np.lexsort((idx, sub))  # by key, then by row order
    sorted_keys = sub[order]
    later = np.zeros(len(idx), bool)
    later[1:] = sorted_keys[1:] == sorted_keys[:-1]
    out = np.zeros(n, bool)
    out[idx[order[later]]] = True
    return out
