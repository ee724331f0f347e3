"""Where a builder's rows come from, streamed: local files and globs (JSONL, Parquet, text, a
`save_to_disk` directory), `s3://` objects, Hugging Face hub datasets, and datasets already in the
store; and how each row's columns become a conversation or a document (`format`).

Every reader yields one row at a time (Parquet and Arrow in record batches), so a source of any
size passes through in bounded memory. Errors name the source and, where there is one, the line.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import glob
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from slm.config import BuilderInput, resolve_path
from slm.errors import UserError
from slm.jsonl import iter_objects
from slm.store import Store, cache_dir

ROLES = {"system", "user", "assistant"}
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
}
TEXT_SUFFIXES = {".txt", ".text", ".md"}
JSON_SUFFIXES = {".jsonl", ".json", ".ndjson"}
BATCH_ROWS = 1024


def file_identity(path: Path) -> str:
    """A file's sha256; for a save_to_disk directory, the fingerprints `datasets` keeps of its content."""
    if path.is_dir():
        states = sorted(path.rglob("state.json"))
        return hashlib.sha256(b"".join(p.read_bytes() for p in states)).hexdigest()
    stat = path.stat()
    return _file_facts(str(path), stat.st_size, stat.st_mtime_ns)[0]


def file_lines(path: Path) -> int:
    """Newlines in a file: the row count of JSONL or text (an upper bound: blank lines count), for ETAs."""
    stat = path.stat()
    return _file_facts(str(path), stat.st_size, stat.st_mtime_ns)[1]


@functools.lru_cache(maxsize=4096)
def _file_facts(path: str, size: int, mtime_ns: int) -> tuple[str, int]:
    """(sha256, newlines), in one read: the build digest, the manifest and the progress ETA all ask, and
    a large corpus is read once per size and mtime."""
    digest, lines = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            lines += chunk.count(b"\n")
    return digest.hexdigest(), lines


@dataclass
class Row:
    where: str  # file:line, or source[row index]
    data: dict


class Source:
    """One builder input: its rows (streamed), what it is (provenance for the manifest)."""

    def __init__(self, item: BuilderInput, store: Store, config_path: str):
        self.item, self.store, self.config_path = item, store, config_path
        self.label = item.label

    def describe(self) -> dict:
        """Provenance: what was read, with checksums where the bytes are ours to hash."""
        item = self.item
        if item.dataset is not None:
            from slm.datasets import read_manifest

            return {
                "dataset": item.dataset,
                "build_digest": read_manifest(self.store, item.dataset).build_digest,
            }
        if item.hf is not None:
            return {"hf": item.hf, "config": item.config, "split": item.split, "revision": item.revision}
        files = self.files()
        if len(files) == 1:
            return {"path": item.path, "sha256": file_identity(files[0])}
        return {"path": item.path, "files": [{"file": f.name, "sha256": file_identity(f)} for f in files]}

    def identity(self) -> object:
        """What changes this source's rows (for the build digest), without reading them all."""
        item = self.item
        if item.dataset is not None:
            from slm.datasets import dataset_identity

            return dataset_identity(self.store, item.dataset)
        if item.hf is not None:
            return {"hf": item.hf, "config": item.config, "split": item.split, "revision": item.revision}
        return [file_identity(f) for f in self.files()]

    def expected_rows(self) -> int | None:
        """About how many rows this source yields (for the builder's ETA), where that is cheap to know."""
        item, known = self.item, None
        if item.dataset is not None:
            from slm.datasets import read_manifest

            train = read_manifest(self.store, item.dataset).splits.get("train")
            known = train.rows if train else None
        elif item.hf is None:
            counts = []
            for file in self.files():
                suffix = file.suffix.lower()
                if file.is_dir():
                    counts.append(None)
                elif suffix == ".parquet":
                    counts.append(parquet_file(file).metadata.num_rows)
                elif suffix in TEXT_SUFFIXES or suffix in (".jsonl", ".ndjson"):
                    counts.append(file_lines(file) + 1)  # a last line without its newline
                else:
                    counts.append(None)
            known = sum(counts) if None not in counts else None
        if item.limit is not None:
            return min(item.limit, known) if known is not None else item.limit
        return known

    # --- files ---------------------------------------------------------------------------------
    def files(self) -> list[Path]:
        """The local files (or one save_to_disk directory) this source reads, S3 objects fetched first."""
        if not hasattr(self, "_files"):
            self._files = self._s3_files() if self.item.path.startswith("s3://") else self._local_files()
        return self._files

    def _local_files(self) -> list[Path]:
        pattern = str(resolve_path(self.item.path))
        if any(c in pattern for c in "*?["):
            # `**` follows symlinked directories, so a link back up the tree yields one file under
            # dozens of names: each file is read once, under the first name that reaches it.
            found, real = [], set()
            for name in sorted(glob.glob(pattern, recursive=True)):
                if Path(name).is_file() and os.path.realpath(name) not in real:
                    real.add(os.path.realpath(name))
                    found.append(Path(name))
            if not found:
                raise UserError(f"{self.config_path}: inputs: {self.item.path!r} matches no file")
            return found
        path = Path(pattern)
        if path.is_dir() and (path / "dataset_info.json").is_file():
            return [path]  # written by datasets' save_to_disk
        if not path.is_file():
            raise UserError(f"{self.config_path}: input file not found: {path}")
        return [path]

    def _s3_files(self) -> list[Path]:
        """Objects under an s3:// URI (a key or a glob), fetched into the node-local cache by checksum of
        their ETag, so a re-build does not download them again."""
        bucket_and_key = self.item.path[len("s3://") :]
        bucket, _, key = bucket_and_key.partition("/")
        literal = key.split("*")[0].split("?")[0].split("[")[0]
        prefix = literal.rsplit("/", 1)[0] if "/" in literal else ""
        store = Store.open(f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}")
        keys = [k for k in store.list("") if fnmatch.fnmatchcase(f"{prefix}/{k}" if prefix else k, key)]
        if not keys:
            raise UserError(f"{self.config_path}: inputs: {self.item.path} matches no object")
        out = []
        for rel in sorted(keys):
            digest = hashlib.sha256(f"{self.item.path}|{rel}|{store.etag(rel)}".encode()).hexdigest()[:16]
            local = cache_dir() / "s3-inputs" / digest / rel.rsplit("/", 1)[-1]
            if not local.is_file():
                store.download_file(rel, local)
            out.append(local)
        return out

    # --- rows ----------------------------------------------------------------------------------
    def rows(self) -> Iterator[Row]:
        limit = self.item.limit
        for n, row in enumerate(self._raw_rows()):
            if limit is not None and n >= limit:
                return
            yield row

    def shaped_rows(self) -> Iterator[Row]:
        """The rows with the input's `field` unnested and its `columns` renamed: the names formats read."""
        field, renames = self.item.field, self.item.columns
        for row in self.rows():
            data = row.data
            if field is not None:
                data = data.get(field)
                if not isinstance(data, dict):
                    raise UserError(
                        f"{row.where}: `field: {field}` names no struct column of this row (its columns: "
                        f"{', '.join(sorted(row.data)) or 'none'})"
                    )
            if renames:
                data = {renames.get(k, k): v for k, v in data.items()}
            yield row if data is row.data else dataclasses.replace(row, data=data)

    def _raw_rows(self) -> Iterator[Row]:
        item = self.item
        if item.dataset is not None:
            from slm.datasets import iter_split

            for i, row in enumerate(iter_split(self.store, item.dataset, "train")):
                yield Row(f"{item.dataset}[{i}]", row)
            return
        if item.hf is not None:
            yield from self._hub_rows()
            return
        for file in self.files():
            yield from self._file_rows(file)

    def _file_rows(self, file: Path) -> Iterator[Row]:
        suffix = file.suffix.lower()
        if file.is_dir():
            from datasets import load_from_disk

            data = load_from_disk(str(file))
            if hasattr(data, "keys"):  # a DatasetDict: the configured split
                if self.item.split not in data:
                    raise UserError(f"{file}: no split {self.item.split!r} (has {', '.join(data)})")
                data = data[self.item.split]
            for i, row in enumerate(data):  # memory-mapped Arrow, read row by row
                yield Row(f"{file}[{i}]", row)
        elif suffix in JSON_SUFFIXES:
            for number, row in iter_objects(file):
                yield Row(f"{file}:{number}", row)
        elif suffix == ".parquet":
            i = 0
            for batch in parquet_file(file).iter_batches(batch_size=BATCH_ROWS):
                for row in batch.to_pylist():
                    yield Row(f"{file}[{i}]", row)
                    i += 1
        elif suffix in TEXT_SUFFIXES:
            with open(file, encoding="utf-8", errors="strict") as f:
                try:
                    for number, line in enumerate(f, 1):
                        if line.strip():
                            yield Row(f"{file}:{number}", {"text": line.rstrip("\n")})
                except UnicodeDecodeError as exc:
                    raise UserError(
                        f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start} of a read block)"
                    ) from None
        else:
            raise UserError(
                f"{file}: unknown input type {suffix!r} (JSONL, Parquet, text, or a save_to_disk directory)"
            )

    def _hub_rows(self) -> Iterator[Row]:
        from datasets import load_dataset

        item = self.item
        try:
            data = load_dataset(
                item.hf, item.config, split=item.split, revision=item.revision, streaming=item.streaming
            )
        except Exception as exc:  # offline, no such repo or config, a gated repo: one line naming the source
            raise UserError(
                f"{self.config_path}: inputs: hf:{item.hf} (config {item.config}, split {item.split}) "
                f"could not be loaded: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            ) from None
        for i, row in enumerate(data):
            yield Row(f"hf:{item.hf}[{i}]", row)


def parquet_file(file: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(file)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{file}: not a Parquet file ({str(exc).splitlines()[0][:200]})") from None


# --- formats: a row's columns → a conversation, a document, a question, a preference pair ----------


def infer_format(columns: set[str]) -> str | None:
    if "messages" in columns:
        return "messages"
    if "conversations" in columns:
        return "sharegpt"
    if {"instruction", "output"} <= columns:
        return "alpaca"
    if {"prompt", "response"} <= columns:
        return "prompt_response"
    if {"question", "choices", "answer"} <= columns:
        return "mcq"
    if {"question", "answer"} <= columns:
        return "question_answer"
    if "text" in columns:
        return "text"
    return None


def _text(value, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: `{key}` must be a non-empty string (got {type(value).__name__})")
    return value


def _checked_messages(messages, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: `messages` must be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise UserError(f"{where}: each message needs role (system/user/assistant) and string content")
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise UserError(f"{where}: no non-empty assistant message")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def mcq_messages(row: dict, where: str) -> list[dict]:
    """A multiple-choice row (MMLU's layout: `question`, `choices`, `answer` as an index or a letter) as
    the question with lettered options, answered by the letter alone: the bench's single-letter form."""
    question, choices, answer = _text(row.get("question"), where, "question"), row.get("choices"), row.get("answer")
    if not isinstance(choices, list) or not 2 <= len(choices) <= 26 or not all(isinstance(c, str) for c in choices):
        raise UserError(f"{where}: `choices` must be a list of 2 to 26 strings")
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    if isinstance(answer, str) and answer.strip().upper() in letters:
        answer = letters.index(answer.strip().upper())
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise UserError(f"{where}: `answer` must be the index or the letter of one of the {len(choices)} choices")
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(letters, choices))
    prompt = f"{question}\n{options}\nAnswer with the letter only."
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": letters[answer]}]


def to_messages(row: dict, fmt: str, where: str) -> list[dict]:
    """A row in `fmt` as chat messages (system/user/assistant)."""
    if fmt == "messages":
        return _checked_messages(row.get("messages"), where)
    if fmt == "sharegpt":
        turns = row.get("conversations")
        if not isinstance(turns, list) or not turns:
            raise UserError(f"{where}: `conversations` must be a non-empty list")
        messages = []
        for turn in turns:
            role = SHAREGPT_ROLES.get(str((turn or {}).get("from", "")).lower()) if isinstance(turn, dict) else None
            if role is None:
                raise UserError(f"{where}: a ShareGPT turn needs `from` (human/gpt/system) and `value`")
            messages.append({"role": role, "content": _text(turn.get("value"), where, "value")})
        return _checked_messages(messages, where)
    if fmt == "alpaca":
        user = _text(row.get("instruction"), where, "instruction")
        extra = row.get("input")
        if isinstance(extra, str) and extra.strip():
            user = f"{user}\n\n{extra}"
        messages = [
            {"role": "user", "content": user},
            {"role": "assistant", "content": _text(row.get("output"), where, "output")},
        ]
        if isinstance(row.get("system"), str) and row["system"].strip():
            messages.insert(0, {"role": "system", "content": row["system"]})
        return messages
    if fmt in ("prompt_response", "question_answer"):
        q, a = ("prompt", "response") if fmt == "prompt_response" else ("question", "answer")
        answer = row.get(a)
        if isinstance(answer, list) and answer:  # several accepted answers (NQ-open, WebQuestions): the first
            answer = answer[0]
        return [
            {"role": "user", "content": _text(row.get(q), where, q)},
            {"role": "assistant", "content": _text(answer, where, a)},
        ]
    if fmt == "mcq":
        return mcq_messages(row, where)
    raise UserError(f"{where}: format {fmt!r} is not a conversation (use it with the pretrain builder)")


class RowReader:
    """A source's rows in one shape, with the format fixed on the first row (or by the config)."""

    def __init__(self, source: Source, wants: str):
        self.source, self.wants, self.format = source, wants, source.item.format
        self.too_long = 0  # rows dropped by the input's max_answer_chars

    def resolve_format(self, row: Row) -> str:
        if self.format is None:
            self.format = infer_format(set(row.data))
            if self.format is None:
                raise UserError(
                    f"{self.source.config_path}: input {self.source.label} ({row.where}): cannot tell the "
                    f"layout from its columns ({', '.join(sorted(row.data)) or 'none'}); set `format:` to one of "
                    f"messages, sharegpt, alpaca, prompt_response, question_answer, mcq, text"
                )
        return self.format

    def __iter__(self):
        inferred = self.format is None
        longest = self.source.item.max_answer_chars
        for row in self.source.shaped_rows():
            fmt = self.resolve_format(row)
            if inferred and (own := infer_format(set(row.data))) not in (None, fmt):
                raise UserError(
                    f"{row.where}: this row is laid out as {own} ({', '.join(sorted(row.data))}), the rows "
                    f"before it as {fmt}: one input holds one layout (give each layout its own `inputs:` entry)"
                )
            if self.wants == "messages":
                messages = to_messages(row.data, fmt, row.where)
                if (
                    longest
                    and len(next(m for m in reversed(messages) if m["role"] == "assistant")["content"]) > longest
                ):
                    self.too_long += 1
                    continue
                yield row.where, {"messages": messages}
            elif self.wants == "text":
                if fmt != "text":
                    raise UserError(f"{row.where}: the pretrain builder reads documents (`text`), not {fmt} rows")
                yield row.where, {"text": _text(row.data.get("text"), row.where, "text")}
            else:
                raise ValueError(self.wants)
