"""JSONL input files, read with the file and line named in every error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from slm.errors import UserError


def iter_objects(file: Path, what: str = "input") -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line, streamed: memory does not grow with the file.
    An empty file is an error."""
    if not file.is_file():
        raise UserError(f"{what} file not found: {file}")
    offset, seen = 0, False
    with open(file, "rb") as f:
        # split on b"\n" only: str.splitlines() also breaks at U+2028 and friends, legal inside JSON strings
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(
                    f"{file}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                    f"{offset + exc.start}); re-encode the file as UTF-8"
                ) from None
            offset += len(raw)
            if number == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark, as the YAML reader takes it
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{file}:{number}: not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise UserError(f"{file}:{number}: nested too deeply to read") from None
            if not isinstance(row, dict):
                raise UserError(f"{file}:{number}: expected a JSON object")
            seen = True
            yield number, row
    if not seen:
        raise UserError(f"{file}: no rows (empty {what})")


def read_objects(file: Path, what: str = "input") -> list[tuple[int, dict]]:
    """[(line number, object)] for every non-blank line; an empty file is an error."""
    return list(iter_objects(file, what))
