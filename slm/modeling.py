"""Resolving model references to local directories, and loading tokenizers and models.

A reference (`ModelSpec.init`, a teacher, a tokenizer) is resolved in the driver (so a missing
model is one clear error before any worker starts) into a small JSON-able dict that workers
materialize into their node-local cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from slm import layout
from slm.config import resolve_path
from slm.errors import UserError
from slm.records import ChampionPointer
from slm.store import Store, fetch_tree_cached, sha256_file

WEIGHT_SUFFIX = ".safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def champion_pointer(store: Store, line: str, version: str | None = None, stage: str | None = None) -> ChampionPointer:
    layout.check_names(line, version)
    if stage is not None:  # the newest champion promoted from that stage of the line
        numbered = layout.versions(store, line, stage)
        if not numbered:
            why = ""
            if store.exists(layout.not_promoted(line, stage)):
                gate = store.read_json(layout.not_promoted(line, stage))
                why = f"; its run {gate['run_id']} was {gate['reason']} (to promote it anyway: {gate['overrule']})"
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
        return ChampionPointer.model_validate(store.read_json(key))
    key = layout.champion_dir(line, version)
    if not store.is_complete(key):
        raise UserError(f"champion {line}@{version} not found at {store.url(key)}")
    return ChampionPointer(line=line, version=version, key=key)


def resolve_ref(spec: str, store: Store, what: str = "model") -> dict:
    """Turn a reference into {'spec', 'store', 'key'} (a store tree), {'local'}, or {'hf', 'revision'}."""
    if spec.startswith("champion:"):
        rest, _, version = spec[len("champion:") :].partition("@")
        line, _, stage = rest.partition(":")
        pointer = champion_pointer(store, line, version or None, stage or None)
        return {"spec": spec, "store": store.uri, "key": pointer.key, "champion": pointer.to_json()}
    if spec.startswith("store:"):
        key = spec[len("store:") :].strip("/")
        if not store.is_complete(key):
            raise UserError(f"{what} {spec!r} not found (or incomplete) at {store.url(key)}")
        return {"spec": spec, "store": store.uri, "key": key}
    if spec.startswith("s3://"):
        remote = Store.open(spec)
        if not remote.is_complete(""):
            raise UserError(f"{what} {spec!r} not found (or incomplete: no _COMPLETE.json)")
        return {"spec": spec, "store": spec, "key": ""}
    if spec.startswith("hf:"):
        repo, _, revision = spec[len("hf:") :].partition("@")
        return {"spec": spec, "hf": repo, "revision": revision or None}
    path = resolve_path(spec)
    if not path.is_dir():
        raise UserError(f"{what} {spec!r}: no such directory {path}")
    check_model_dir(path, what, need_weights=what != "tokenizer")
    return {"spec": spec, "local": str(path)}


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


def materialize(ref: dict) -> Path:
    """A local directory holding the referenced model/tokenizer (downloads into the node cache once)."""
    if "local" in ref:
        return Path(ref["local"])
    if "hf" in ref:
        from huggingface_hub import snapshot_download

        try:
            path = Path(
                snapshot_download(
                    ref["hf"],
                    revision=ref["revision"],
                    allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "README.md"],
                )
            )
        except Exception as exc:  # offline, missing repo, gated repo: one line, no traceback
            offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
            raise UserError(
                f"cannot fetch {ref['spec']} from the Hugging Face hub{offline}: {type(exc).__name__}"
            ) from None
        check_model_dir(path, ref["spec"])
        return path
    return fetch_tree_cached(Store.open(ref["store"]), ref["key"])


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


def scratch_config(architecture: dict, tokenizer, max_length: int):
    """A transformers config from an architecture mapping; unknown keys are rejected, not ignored."""
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
    arch.update(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = AutoConfig.for_model(model_type, **arch)
    positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
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
