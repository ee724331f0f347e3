"""The flow every row builder shares, in bounded memory:

read each source (data_builders/sources.py) → shape its rows (a builder's own check) → dedup and
decontaminate (data_builders/hygiene.py) → mix by weight → hold out validation from the distinct rows →
shuffle → write shards as they fill.

Rows are spooled to an Arrow file on local disk as they stream in; mixing and shuffling work on row
indices (8 bytes a row) and each shard is read from the spool batch by batch, so memory holds one
shard at a time however large the sources are. A weight repeats rows by index (2.0: each kept row
twice; 0.5: a seeded half), never by copying them.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from slm.config import BuilderConfig
from slm.data_builders.hygiene import EvalIndex, Hygiene
from slm.data_builders.sources import RowReader, Source
from slm.datasets import shard_count, write_sharded
from slm.errors import UserError
from slm.log import log
from slm.store import Store

SPOOL_BATCH = 2048


class Spool:
    """Rows appended to an Arrow IPC file in batches of SPOOL_BATCH, then read back by row index."""

    def __init__(self, path: Path):
        self.path, self.writer, self.schema, self.pending, self.rows = path, None, None, [], 0

    def append(self, row: dict) -> None:
        self.pending.append(row)
        self.rows += 1
        if len(self.pending) >= SPOOL_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch = pa.RecordBatch.from_pylist(self.pending, schema=self.schema)  # the first batch fixes the schema
        if self.writer is None:
            self.schema = batch.schema
            self.writer = pa.ipc.new_file(str(self.path), batch.schema)
        self.writer.write_batch(batch)
        self.pending = []

    def reader(self) -> SpoolReader:
        self.flush()
        if self.writer is None:
            raise UserError("no rows to write")
        self.writer.close()
        return SpoolReader(self.path, self.rows)


class SpoolReader:
    """Rows of a spool by index. Batches are read from the file as needed and let go, not memory-mapped:
    a mapped file's touched pages count as the process's memory, and a shuffled shard touches them all."""

    def __init__(self, path: Path, rows: int):
        self.path, self.num_rows = path, rows
        self.file = pa.ipc.open_file(pa.OSFile(str(path)))

    def take(self, indices) -> pa.Table:
        """The rows at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        if not len(indices):
            return self.file.schema.empty_table()
        order = np.argsort(indices, kind="stable")
        wanted = indices[order]
        batch_of = wanted // SPOOL_BATCH
        bounds = np.flatnonzero(np.diff(batch_of)) + 1
        pieces = []
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(wanted)]):
            b = int(batch_of[lo])
            batch = pa.Table.from_batches([self.file.get_batch(b)])
            pieces.append(batch.take(pa.array(wanted[lo:hi] - b * SPOOL_BATCH)))
        table = pa.concat_tables(pieces).combine_chunks()
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return table.take(pa.array(inverse))

    def batches(self):
        """Every row in order, a spool batch at a time."""
        for b in range(self.file.num_record_batches):
            yield self.file.get_batch(b)


class Progress:
    """A log line every few seconds while a builder reads: rows so far, rows/s, and, where the sources'
    sizes are known (Source.expected_rows), the fraction done and an ETA. SLM_PROGRESS_EVERY_S sets the
    interval (10 s by default)."""

    def __init__(self, what: str, every_s: float | None = None, total: int | None = None, unit: str = "rows"):
        if every_s is None:
            every_s = float(os.environ.get("SLM_PROGRESS_EVERY_S", "10"))
        self.what, self.every_s, self.start, self.last, self.rows = what, every_s, time.time(), time.time(), 0
        self.total, self.unit = total, unit

    def tick(self, n: int = 1) -> None:
        self.rows += n
        now = time.time()
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.rows / (now - self.start)
            line = f"[data] {self.what}: {self.rows:,} {self.unit} ({rate:,.0f} {self.unit}/s)"
            if self.total and self.rows < self.total:
                eta = (self.total - self.rows) / max(rate, 1e-9)
                line += f", about {self.rows / self.total:.0%} of {self.total:,}, eta {_clock(eta)}"
            log(line)

    def done(self) -> float:
        return self.rows / max(time.time() - self.start, 1e-9)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def hygiene_text(row: dict) -> str:
    """What dedup and decontamination look at: every turn's text, or the document."""
    if "messages" in row:
        return "\n".join(m["content"] for m in row["messages"])
    if "text" in row:
        return row["text"]
    if "question" in row:
        return row["question"]
    return "\n".join(m["content"] for key in ("prompt", "chosen", "rejected") for m in row.get(key, []))


def collect(
    cfg: BuilderConfig,
    store: Store,
    evals: EvalIndex | None,
    config_path: str,
    workdir: Path,
    wants: str = "messages",
    shape: Callable[[dict, str], dict] | None = None,
    reader: Callable[[Source], Iterator[tuple[str, dict]]] | None = None,
) -> tuple[SpoolReader, np.ndarray, list[dict], dict]:
    """Every source read, shaped, checked. Returns (spooled rows, keep mask, per-source info, hygiene report)."""
    hygiene = Hygiene(cfg.hygiene, evals, workdir)
    spool = Spool(workdir / "rows.arrow")
    sources, ranges = [], []
    opened = [Source(item, store, config_path) for item in cfg.inputs]
    expected = [s.expected_rows() for s in opened]
    progress = Progress(f"{cfg.output}", total=sum(expected) if None not in expected else None)
    for item, source in zip(cfg.inputs, opened):
        sid = hygiene.source(source.label)
        start = spool.rows
        rows = reader(source) if reader else RowReader(source, wants)
        for where, row in rows:
            if shape is not None:
                row = shape(row, where)
            row["source"] = source.label
            hygiene.add(sid, hygiene_text(row), where)
            row["_where"] = where  # spooled with the row (on disk), for the samples of dropped rows
            spool.append(row)
            progress.tick()
        if spool.rows == start:
            raise UserError(f"{config_path}: input {source.label}: no rows")
        ranges.append((start, spool.rows))
        sources.append(
            {
                "name": source.label,
                **source.describe(),
                "weight": item.weight,
                "format": getattr(rows, "format", None) or item.format,
                **({"answers_over_limit": rows.too_long} if item.max_answer_chars else {}),
            }
        )
        if item.max_answer_chars:
            log(
                f"[data] {cfg.output}: input {source.label}: {rows.too_long:,} rows dropped, their answer longer "
                f"than max_answer_chars {item.max_answer_chars}"
            )
    keep = hygiene.finish()
    table = spool.reader()
    hygiene.add_duplicate_samples(
        keep, lambda i: (lambda row: (row["_where"], hygiene_text(row)))(table.take([i]).to_pylist()[0])
    )
    report = hygiene.report()
    hygiene.close()
    for info, (start, end) in zip(sources, ranges):
        tally = report["sources"][info["name"]]
        info.update(rows_in=end - start, rows_kept=tally["kept"])
    log(
        f"[data] {cfg.output}: read {spool.rows:,} rows ({progress.done():,.0f} rows/s); kept {int(keep.sum()):,} "
        f"after dedup and decontamination"
    )
    for name, tally in report["sources"].items():
        dropped = tally["exact_duplicates"] + tally["near_duplicates"] + sum(tally["contaminated"].values())
        if dropped:
            log(
                f"[data]   {name}: {tally['exact_duplicates']} exact and {tally['near_duplicates']} near duplicates, "
                f"contaminated {tally['contaminated'] or 0}"
            )
    return table, keep, sources, {**report, "ranges": ranges}


def mix(
    cfg: BuilderConfig, keep: np.ndarray, ranges: list[tuple[int, int]], sources: list[dict], rng: np.random.Generator
) -> np.ndarray:
    """Row indices of the mixed dataset: each source's kept rows repeated by its weight (seeded)."""
    picked = []
    for item, (start, end), info in zip(cfg.inputs, ranges, sources):
        rows = start + np.nonzero(keep[start:end])[0]
        whole, frac = int(item.weight), item.weight - int(item.weight)
        part = [rows] * whole + ([rng.choice(rows, size=round(frac * len(rows)), replace=False)] if frac else [])
        part = np.concatenate(part) if part else np.zeros(0, np.int64)
        info["rows_out"] = int(len(part))
        picked.append(part)
    return np.concatenate(picked) if picked else np.zeros(0, np.int64)


def split_and_write(
    cfg: BuilderConfig,
    store: Store,
    table: SpoolReader,
    order: np.ndarray,
    sources: list[dict],
    version: str,
    digest: str,
    extra: dict | None = None,
) -> dict:
    """Hold out validation, shuffle, write each split's shards from the spool.

    Validation is drawn from the distinct rows before weighting takes effect: a row repeated by its
    source's weight (2.0) is in one split with all its copies, never in both, and is validated once."""
    rng = np.random.default_rng(cfg.seed)
    distinct = rng.permutation(np.unique(order))
    n_val = round(len(distinct) * cfg.validation_fraction)
    held_out = distinct[:n_val]
    train = rng.permutation(order[~np.isin(order, held_out)])
    splits = {"train": train, **({"validation": held_out} if n_val else {})}

    def shards(indices: np.ndarray):
        n = shard_count(len(indices), cfg.num_shards, cfg.max_shard_rows)
        bounds = [round(i * len(indices) / n) for i in range(n + 1)] if n else []
        for i in range(n):
            yield table.take(indices[bounds[i] : bounds[i + 1]]).drop_columns(["_where"])

    return write_sharded(
        store,
        cfg.output,
        {name: shards(idx) for name, idx in splits.items()},
        builder=cfg.builder,
        version=version,
        sources=sources,
        extra={"seed": cfg.seed, "build_digest": digest, **(extra or {})},
    )


def build_rows(
    cfg: BuilderConfig,
    store: Store,
    evals: EvalIndex | None,
    config_path: str,
    version: str,
    digest: str,
    wants: str = "messages",
    shape=None,
    reader=None,
    extra=None,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="slm-build-") as tmp:
        table, keep, sources, report = collect(cfg, store, evals, config_path, Path(tmp), wants, shape, reader)
        order = mix(cfg, keep, report.pop("ranges"), sources, np.random.default_rng(cfg.seed))
        return split_and_write(
            cfg,
            store,
            table,
            order,
            sources,
            version,
            digest,
            extra={"hygiene": report, **(extra(table, order) if callable(extra) else extra or {})},
        )


def build_chat(
    cfg: BuilderConfig, store: Store, evals: EvalIndex | None, config_path: str, version: str, digest: str
) -> dict:
    return build_rows(cfg, store, evals, config_path, version, digest)
