"""Run records: what produced every output, stored beside it, so model cards are generated from them."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
from importlib import metadata
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slm import IN_CHECKOUT, REPO_ROOT, layout
from slm.errors import UserError
from slm.store import redact_url

PACKAGES = (
    "torch",
    "deepspeed",
    "ray",
    "transformers",
    "accelerate",
    "datasets",
    "lm_eval",
    "mergekit",
    "peft",
    "trl",
    "tokenizers",
    "safetensors",
    "huggingface_hub",
    "boto3",
    "pyarrow",
    "pydantic",
)

# Never let credentials reach a record, a log or a card.
# Matches key names that *end* in a secret word (hf_token, aws_secret_access_key), not tokens_per_s or tokenizer.
_SECRET_KEY = re.compile(r"(^|_)(secret|password|passwd|credentials?|api_key|access_key|token)$", re.I)


R = TypeVar("R", bound=BaseModel)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The checkout's commit (with -dirty), else what the image was built from (SLM_GIT_COMMIT, set by
    the Dockerfile's GIT_COMMIT build arg: the image leaves .git out)."""
    built = os.environ.get("SLM_GIT_COMMIT") or None
    if not IN_CHECKOUT:
        return built
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else built
    except (OSError, subprocess.SubprocessError):
        return built


def redact(obj):
    """Drop values whose key looks like a secret, and credentials embedded in URLs."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if _SECRET_KEY.search(str(k)) else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_url(obj)
    return obj


def environment_facts() -> dict:
    """Where a run happened; the AWS endpoint is kept (it says which store), keys never are."""
    return {
        "host_cpus": os.cpu_count(),
        "aws_endpoint": os.environ.get("AWS_ENDPOINT_URL"),
        "hf_offline": os.environ.get("HF_HUB_OFFLINE") == "1",
    }


class Record(BaseModel):
    """A typed record whose JSON form is the store's file layout: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> dict:
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


def parse_record(model: type[R], data, where: str) -> R:
    """A stored record, typed: a file that is not one (a misspelt or unknown field, a wrong type) is one
    line naming the file and the field, never a traceback."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "<top level>"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise UserError(f"{where}: not a valid {model.__name__}: {field}: {err['msg']}{more}") from None


def load_record(store, key: str, model: type[R]) -> R:
    """A store file read as its record type (one line naming the file when it is not one)."""
    return parse_record(model, store.read_json(key), store.url(key))


class Stored(Record):
    """A record whose JSON form holds exactly the keys it was given, loaded or built (an explicit
    null stays null, an absent key stays absent): a file read and written back is the same file."""

    def to_json(self) -> dict:
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)


class RollbackEvent(Record):
    """`champions/<line>/history/<time>-rollback.json`: a deliberate move of `latest` back, who, when, why."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    line: str
    from_: str = Field(alias="from")
    to: str
    reason: str
    by: str
    at: str


def read_pointer(store, line: str) -> ChampionPointer | None:
    """A line's `latest.json`, typed (None when the line has none yet)."""
    return read_pointer_tagged(store, line)[0]


def read_pointer_tagged(store, line: str) -> tuple[ChampionPointer | None, str | None]:
    """`latest.json` and the tag its next writer must still find (store.write_if): moves of `latest`
    are compare-and-swap, so two at once never lose one unseen."""
    key = layout.latest_pointer(line)
    data, tag = store.read_tagged(key)
    if data is None:
        return None, None
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{store.url(key)}: not valid JSON ({exc}); the store holds a damaged file") from None
    pointer = parse_record(ChampionPointer, raw, store.url(key))
    if pointer.line != line or pointer.key != layout.champion_dir(line, pointer.version):
        raise UserError(
            f"{store.url(key)}: line {pointer.line!r}, version {pointer.version!r} and key {pointer.key!r} "
            f"disagree (expected key {layout.champion_dir(line, pointer.version)!r}); the pointer is damaged"
        )
    return pointer, tag


class ChampionPointer(Record):
    """`champions/<line>/latest.json`, and what a `champion:` reference resolves to."""

    line: str
    version: str
    key: str
    stage: str | None = None
    run_id: str | None = None
    updated_at: str | None = None
    rollback: RollbackEvent | None = None  # set when `latest` was moved back on purpose (promote.py --rollback)
