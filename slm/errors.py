"""One error type for everything a user can fix, printed as a single line by the launchers."""

from __future__ import annotations

import functools
import re
import sys
import traceback


def redact_url(text: str) -> str:
    """Credentials written into a URL never reach a message, a log, a record or a card: user-info
    (scheme://user:secret@host, or a bare token as user) and query strings (?token=...) are replaced.
    The one redaction of text (slm.records.redact uses it for values)."""
    text = re.sub(r"://[^/@\s]+@", "://<redacted>@", text)
    return re.sub(r"(://[^\s?#'\"]*)\?[^\s#'\"]+", r"\1?<redacted>", text)


MAX_MESSAGE_CHARS = 2000


def shorten(message: str) -> str:
    """A message that quotes a huge value (a 50 MB `line:`) stays one readable line."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    cut = len(message) - MAX_MESSAGE_CHARS
    return f"{message[:1500]} […{cut:,} characters…] {message[-500:]}"


class UserError(Exception):
    """A problem in the user's input (config, paths, data, models): shown as one line, exit code 2."""


def require_extra(module: str, extra: str, feature: str) -> None:
    """An optional feature's package is installed, or one line says which extra brings it."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"{feature} needs the {module} package, which is not installed: pip install 'slm-pipeline[{extra}]'"
        )


def cli_main(fn):
    """Wrap a launcher's main(): UserError becomes one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            print(f"error: {shorten(redact_url(str(exc)))}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            # Every store write is a whole object put in place at once, and a dataset, checkpoint or
            # champion counts only once its completion marker is written: nothing half-done is read.
            print("error: interrupted; what had not finished has no completion marker and is not used", file=sys.stderr)
            sys.exit(130)
        except OSError as exc:  # permissions, a full disk, a path that is a file: the user's machine, not a bug
            if exc.errno is None or not exc.filename:
                _redacted_traceback()
            print(f"error: {redact_url(str(exc.filename))}: {exc.strerror}", file=sys.stderr)
            sys.exit(2)
        except Exception:  # a bug: its traceback is kept, with any credential in it redacted
            _redacted_traceback()

    return wrapper


def _redacted_traceback() -> None:
    sys.stderr.write(redact_url("".join(traceback.format_exc())))
    sys.exit(1)


def find_user_error(exc: BaseException) -> UserError | None:
    """Ray wraps worker exceptions; walk the cause chain to recover the user's one-line error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError):
            return exc
        for failure in (getattr(exc, "worker_failures", None) or {}).values():  # Ray Train worker errors
            found = find_user_error(failure)
            if found is not None:
                return found
        nested = getattr(exc, "cause", None)
        exc = nested if isinstance(nested, BaseException) else (exc.__cause__ or exc.__context__)
    return None
