"""Resolving model references to local directories, and loading tokenizers and models.

A reference (`ModelSpec.init`, a teacher, a tokenizer) is resolved in the driver (so a missing
model is one clear error before any worker starts) into a typed, JSON-able ModelRef (slm/refs.py)
that workers materialize into their node-local cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from slm import layout, refs
from slm.config import resolve_path
from slm.errors import UserError
from slm.records import ChampionPointer, load_record, read_pointer
from slm.refs import HubRef, LocalRef, ModelRef, StoreRef, check_model_dir
from slm.run_record import NotPromoted
from slm.store import Store, sha256_file


def champion_pointer(store: Store, line: str, version: str | None = None, stage: str | None = None) -> ChampionPointer:
    layout.check_names(line, version)
    if stage is not None:  # the newest champion promoted from that stage of the line
        numbered = layout.versions(store, line, stage)
        if not numbered:
            why = ""
            if store.exists(layout.not_promoted(line, stage)):
                key = layout.not_promoted(line, stage)
                gate = load_record(store, key, NotPromoted)
                why = f"; its run {gate.run_id} was {gate.reason} (to promote it anyway: {gate.overrule})"
            raise UserError(
                f"no champion promoted yet from stage {stage!r} of line {line!r} "
                f"({store.url(layout.line_dir(line))}){why}"
            )
        version = numbered[-1][1]
        return ChampionPointer(line=line, version=version, key=layout.champion_dir(line, version), stage=stage)
    if version is None:
        key = layout.latest_pointer(line)
        if not store.exists(key):
            gated = store.children(layout.gates_dir(line))
            why = (
                f"; the gate kept out the champion of {', '.join(g.removesuffix('.json') for g in gated)} "
                f"(see {store.url(layout.gates_dir(line))})"
                if gated
                else ""
            )
            raise UserError(f"no champion promoted yet for line {line!r} ({store.url(key)} missing){why}")
        return read_pointer(store, line)
    key = layout.champion_dir(line, version)
    if not store.is_complete(key):
        raise UserError(f"champion {line}@{version} not found at {store.url(key)}")
    return ChampionPointer(line=line, version=version, key=key)


def resolve_ref(spec: str, store: Store, what: str = "model") -> ModelRef:
    """A reference string (see slm/refs.py), checked against the store or the disk: one clear error for
    a champion, tree or directory that is not there. `scratch` is the stage's business, not a model."""
    ref = refs.parse(spec)
    if ref.kind == "champion":
        pointer = champion_pointer(store, ref.line, ref.version, ref.stage)
        return StoreRef(spec=spec, store=store.uri, key=pointer.key, champion=pointer.to_json())
    if ref.kind == "store":
        if not store.is_complete(ref.key):
            raise UserError(f"{what} {spec!r} not found (or incomplete) at {store.url(ref.key)}")
        return StoreRef(spec=spec, store=store.uri, key=ref.key)
    if ref.kind == "s3":
        remote = Store.open(spec)
        if not remote.is_complete(""):
            raise UserError(f"{what} {spec!r} not found (or incomplete: no _COMPLETE.json)")
        return StoreRef(spec=spec, store=spec, key="")
    if ref.kind == "hf":
        commit = hub_commit(ref.repo, ref.revision)
        pinned = {"commit": commit} if commit else {}
        return HubRef(spec=spec, hf=ref.repo, revision=ref.revision, tokenizer_only=what == "tokenizer", **pinned)
    path = resolve_path(spec)
    if not path.is_dir():
        raise UserError(f"{what} {spec!r}: no such directory {path}")
    check_model_dir(path, what, need_weights=what != "tokenizer")
    return LocalRef(spec=spec, local=str(path))


def hub_commit(repo: str, revision: str | None) -> str | None:
    """The commit a hub revision (None: the default branch) resolves to, so a run records what it
    loaded rather than a moving branch name. Offline, from the local cache's refs (None when the model
    is not cached: fetching it then fails with its own message); online, from the hub."""
    import re

    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, "config.json", revision=revision or "main")
        return Path(found).parent.name if isinstance(found, str) else None
    from huggingface_hub import HfApi

    try:
        return HfApi().model_info(repo, revision=revision).sha
    except Exception as exc:  # no such repo or revision, gated, no network: one line naming the reference
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(f"hf:{repo}@{revision or 'main'}: cannot resolve it on the hub ({first})") from None


def load_tokenizer(path: Path, trust_remote_code: bool = False, chat_template: str | None = None):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load tokenizer from {path}: {str(exc).splitlines()[0]}") from None
    if chat_template:
        template_file = resolve_path(chat_template)
        tokenizer.chat_template = template_file.read_text() if template_file.is_file() else chat_template
    return tokenizer


def context_length(config) -> int | None:
    """The positions a model's config allows (GPT-2's n_positions, Llama/Qwen2's max_position_embeddings)."""
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def scratch_config(architecture: dict, tokenizer, max_length: int):
    """A transformers config from an architecture mapping; unknown keys are rejected, not ignored.
    The vocabulary is the tokenizer's, or a stated `vocab_size` at least that large (padded up, e.g.
    50,257 → 50,304 for a GPU-friendly multiple); tokenizer None (a plan, before it is built): as stated."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    arch = dict(architecture)
    model_type = arch.pop("model_type")
    if model_type not in CONFIG_MAPPING:
        raise UserError(f"model.architecture.model_type: unknown model type {model_type!r}")
    defaults = CONFIG_MAPPING[model_type]()
    unknown = sorted(k for k in arch if not hasattr(defaults, k))
    if unknown:
        raise UserError(f"model.architecture: unknown key(s) for {model_type}: {', '.join(unknown)}")
    stated = arch.pop("vocab_size", None)
    if tokenizer is None and stated is None:
        raise ValueError("scratch_config: without a tokenizer, the architecture must state vocab_size")
    if tokenizer is not None and stated is not None and stated < len(tokenizer):
        raise UserError(
            f"model.architecture.vocab_size {stated} is smaller than the tokenizer's {len(tokenizer)} tokens "
            f"(leave it out to use the tokenizer's, or state at least {len(tokenizer)})"
        )
    arch.update(
        vocab_size=stated if stated is not None else len(tokenizer),
        bos_token_id=getattr(tokenizer, "bos_token_id", None),
        eos_token_id=getattr(tokenizer, "eos_token_id", None),
        pad_token_id=getattr(tokenizer, "pad_token_id", None),
    )
    config = AutoConfig.for_model(model_type, **arch)
    positions = context_length(config)
    if positions is not None and positions < max_length:
        raise UserError(
            f"model.architecture: context of {positions} tokens is shorter than data.max_length {max_length}"
        )
    return config


def load_model(path: Path, trust_remote_code: bool = False, dtype=None, attn_implementation: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM

    try:
        attn = {"attn_implementation": attn_implementation} if attn_implementation else {}
        return AutoModelForCausalLM.from_pretrained(
            str(path), use_safetensors=True, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code, **attn
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model from {path}: {str(exc).splitlines()[0]}") from None


def tokenizer_digest(path: Path) -> str | None:
    """Checksum of a tokenizer's vocabulary file (tokenizer.json), to tie token datasets to tokenizers."""
    file = path / "tokenizer.json"
    return sha256_file(file) if file.is_file() else None
