"""The driver's log: one line per event on stderr, flushed (Ray and pipes must not hold it back)."""
from __future__ import annotations

import sys


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
