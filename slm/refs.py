"""Model references: the one place a reference string is parsed and a resolved reference is told apart.

A reference (`model.init`, a teacher, a tokenizer, a model to evaluate) is written as

    scratch                       build from `architecture` (model.init only)
    champion:<line>[:<stage>|@<version>]   a champion of a line in the pipeline's store
    store:<key>                   a model tree of the pipeline's store
    s3://bucket/key               a model tree of another store
    hf:<repo>[@<revision>]        the Hugging Face hub
    <directory>                   a local model directory

`parse` turns the string into a `Spec` once, where it enters; `slm.modeling.resolve_ref` checks it
against the store and the disk and returns a `ModelRef`, whose JSON form is what run records have
always held: {"spec", "store", "key"[, "champion"]}, {"spec", "local"}, {"spec", "hf", "revision"}
or {"spec": "scratch"}. Everything that needs to know which kind a reference is asks it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from slm.config import resolve_path
from slm.errors import UserError
from slm.records import ChampionPointer, Stored
from slm.store import Store, fetch_tree_cached, sha256_file

SCRATCH = "scratch"
WEIGHT_SUFFIX = ".safetensors"
# Files of a local model directory hashed by content for a run's identity; bigger ones (weights of a
# multi-GB model) by size and modification time.
HASH_BY_CONTENT_BELOW = 64 << 20
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class Spec:
    """A reference string, parsed: its kind and parts (nothing checked against a store or the disk)."""

    text: str
    kind: Literal["scratch", "champion", "store", "s3", "hf", "local"]
    line: str | None = None  # champion
    stage: str | None = None  # champion:<line>:<stage>
    version: str | None = None  # champion ...@<version>
    key: str | None = None  # store:<key>
    repo: str | None = None  # hf
    revision: str | None = None  # hf ...@<revision>


def parse(text: str) -> Spec:
    if text == SCRATCH:
        return Spec(text, "scratch")
    if text.startswith("champion:"):
        rest, at, version = text[len("champion:") :].partition("@")
        line, colon, stage = rest.partition(":")
        if not line or (colon and not stage) or (at and not version):
            raise UserError(
                f"{text!r}: a part of the reference is empty; champion:<line>[:<stage>] or champion:<line>@<version>"
            )
        if stage and version:
            raise UserError(
                f"{text!r}: give a stage or a version, not both (a version names its stage: champion:{line}@{version})"
            )
        return Spec(text, "champion", line=line, stage=stage or None, version=version or None)
    if text.startswith("store:"):
        return Spec(text, "store", key=text[len("store:") :].strip("/"))
    if text.startswith("s3://"):
        return Spec(text, "s3")
    if text.startswith("hf:"):
        repo, _, revision = text[len("hf:") :].partition("@")
        return Spec(text, "hf", repo=repo, revision=revision or None)
    return Spec(text, "local")


class StoreRef(Stored):
    """A model tree in a store (a champion, a `store:` key, an `s3://` tree)."""

    spec: str
    store: str
    key: str
    champion: ChampionPointer | None = None  # the champion it resolved to

    @property
    def kind(self) -> str:
        return "store"

    def materialize(self) -> Path:
        return fetch_tree_cached(Store.open(self.store), self.key)

    def in_store(self, uri: str) -> bool:
        """A tree of the store at `uri` (so the sweep can read, cache and merge it there)."""
        return self.store == uri

    def files_identity(self):
        return Store.open(self.store).tree_manifest(self.key)["files"]

    @property
    def label(self) -> str:
        """What a log or card line calls it: the reference, and the champion it resolved to."""
        return f"`{self.spec}`" + (f" ({self.champion.line}@{self.champion.version})" if self.champion else "")

    @property
    def location(self) -> str | None:
        """Where it is: the champion's key, else the tree's (None for the root of an s3:// store)."""
        return self.champion.key if self.champion else (self.key or None)

    @property
    def provenance(self):
        """What a record says it resolved to: the champion pointer, else where it is."""
        return self.champion.to_json() if self.champion else self.location


class LocalRef(Stored):
    """A model directory on this machine."""

    spec: str
    local: str

    @property
    def kind(self) -> str:
        return "local"

    def materialize(self) -> Path:
        return Path(self.local)

    def in_store(self, uri: str) -> bool:
        return False

    def files_identity(self):
        """File checksums by content, and by size and modification time for files of
        HASH_BY_CONTENT_BELOW or more (naming a run never reads gigabytes of weights)."""
        root = resolve_path(self.local)
        return {
            p.name: (
                sha256_file(p)
                if p.stat().st_size < HASH_BY_CONTENT_BELOW
                else f"{p.stat().st_size}:{p.stat().st_mtime_ns}"
            )
            for p in sorted(root.iterdir())
            if p.is_file()
        }

    @property
    def label(self) -> str:
        return f"`{self.spec}`"

    @property
    def location(self) -> str:
        return self.local

    @property
    def provenance(self):
        return self.location


class HubRef(Stored):
    """A Hugging Face hub repository, at a revision (None: the default branch)."""

    spec: str
    hf: str
    revision: str | None
    commit: str | None = None  # the commit the revision resolved to when the reference was resolved
    # a tokenizer reference (e.g. hf:openai-community/gpt2 for a model trained from scratch): its
    # tokenizer files are fetched, never the repository's weights
    tokenizer_only: bool = Field(False, exclude_if=lambda v: not v)

    @property
    def kind(self) -> str:
        return "hf"

    def materialize(self) -> Path:
        return fetch_hub(self)

    def in_store(self, uri: str) -> bool:
        return False

    def files_identity(self):
        pinned = {"commit": self.commit} if self.commit else {}
        return {"hf": self.hf, "revision": self.revision, **pinned}

    @property
    def label(self) -> str:
        return f"`{self.spec}` (commit `{self.commit}`)" if self.commit else f"`{self.spec}`"

    @property
    def location(self) -> str:
        return self.hf

    @property
    def provenance(self):
        return self.location


class ScratchRef(Stored):
    """No starting weights: the model is built from the stage's `architecture`."""

    spec: Literal["scratch"] = SCRATCH

    def model_post_init(self, context) -> None:
        self.__pydantic_fields_set__.add("spec")  # written even when defaulted: {"spec": "scratch"}

    @property
    def kind(self) -> str:
        return "scratch"

    def in_store(self, uri: str) -> bool:
        return False

    def files_identity(self):
        return SCRATCH

    @property
    def label(self) -> str:
        return f"`{SCRATCH}`"


def check_model_dir(path: Path, what: str, need_weights: bool = True) -> None:
    if need_weights:
        if not (path / "config.json").is_file():
            raise UserError(f"{what} at {path}: config.json missing")
        if not any(p.name.endswith(WEIGHT_SUFFIX) for p in path.iterdir()):
            found = ", ".join(sorted(p.name for p in path.iterdir())[:6]) or "nothing"
            raise UserError(
                f"{what} at {path}: no *.safetensors weights (found {found}); "
                f"convert pickled weights to safetensors first"
            )
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(f"{what} at {path}: no tokenizer files ({' or '.join(TOKENIZER_FILES)})")


def fetch_hub(ref: HubRef) -> Path:
    """A hub model in the local HF cache (downloaded once; offline, the cached snapshot)."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(
            snapshot_download(
                ref.hf,
                revision=ref.commit or ref.revision,  # the commit pinned when the reference was resolved
                allow_patterns=["*.json", "*.model", "*.txt", "*.jinja", "README.md"]
                + ([] if ref.tokenizer_only else ["*.safetensors"]),
            )
        )
    except Exception as exc:  # offline, missing repo, gated repo: one line, no traceback
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise UserError(f"cannot fetch {ref.spec} from the Hugging Face hub{offline}: {type(exc).__name__}") from None
    check_model_dir(path, ref.spec, need_weights=not ref.tokenizer_only)
    return path


def _kind(value: Any) -> str:
    """Which kind a resolved reference is, from its JSON form (the only place that looks at the keys)."""
    if isinstance(value, dict):
        if "key" in value:
            return "store"
        if "local" in value:
            return "local"
        if "hf" in value:
            return "hf"
        return "scratch"
    return value.kind


ModelRef = Annotated[
    Annotated[StoreRef, Tag("store")]
    | Annotated[LocalRef, Tag("local")]
    | Annotated[HubRef, Tag("hf")]
    | Annotated[ScratchRef, Tag("scratch")],
    Discriminator(_kind),
]
