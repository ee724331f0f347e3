"""JSONL input files, read with the file and line named in every error."""
from __future__ import annotations

import json
from pathlib import Path

from slm.errors import UserError


def read_objects(file: Path, what: str = "input") -> list[tuple[int, dict]]:
    """[(line number, object)] for every non-blank line; an empty file is an error."""
    if not file.is_file():
        raise UserError(f"{what} file not found: {file}")
    rows = []
    # split on "\n" only: str.splitlines() also breaks at U+2028 and friends, legal inside JSON strings
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = file.read_bytes()[:exc.start].count(b"\n") + 1
        raise UserError(f"{file}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                        f"re-encode the file as UTF-8") from None
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{file}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{file}:{number}: expected a JSON object")
        rows.append((number, row))
    if not rows:
        raise UserError(f"{file}: no rows (empty {what})")
    return rows
