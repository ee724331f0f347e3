"""One line per event on stderr, flushed, for drivers and workers alike.

Written with `sys.stderr.write`, not `print`: inside Ray Train workers `print` is patched to go to
both the stream and Train's logger, and every line would reach the job log twice.
"""

from __future__ import annotations

import sys

from slm.errors import redact_url


def log(msg: str) -> None:
    sys.stderr.write(redact_url(msg) + "\n")
    sys.stderr.flush()
