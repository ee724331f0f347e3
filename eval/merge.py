"""SLERP merges of a stage's champion with its precursor, and of any configured pair of candidates
(mergekit), kept as extra sweep candidates.

`base_model` is the champion, so `t` is how far the merge moves toward the precursor: t = 0.1 keeps
90% of the way at the champion (the FF line's "SLERP t=0.10" backup).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml

from slm import layout
from slm.errors import UserError, require_extra
from slm.eval.scores import Candidate
from slm.eval.sweep import model_dir, model_ref
from slm.store import Store, fetch_tree_cached

# Fields that must agree for two checkpoints to be merged tensor by tensor.
SHAPE_FIELDS = (
    "model_type",
    "architectures",
    "vocab_size",
    "n_embd",
    "hidden_size",
    "n_layer",
    "num_hidden_layers",
    "n_head",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "n_inner",
    "tie_word_embeddings",
)


def check_compatible(a: Path, b: Path) -> None:
    ca, cb = (json.loads((p / "config.json").read_text()) for p in (a, b))
    diffs = [f"{k}: {ca.get(k)!r} vs {cb.get(k)!r}" for k in SHAPE_FIELDS if ca.get(k) != cb.get(k)]
    if diffs:
        raise UserError(f"cannot merge {a} and {b}: architectures differ ({'; '.join(diffs)})")


def slerp_config(champion: Path, precursor: Path, t: float) -> dict:
    return {
        "merge_method": "slerp",
        "base_model": str(champion),
        "models": [{"model": str(champion)}, {"model": str(precursor)}],
        "parameters": {"t": t},
        "dtype": "float32",
    }


def run_mergekit(config: dict, out_dir: Path) -> dict:
    """One mergekit merge into out_dir, its configuration kept beside the weights."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    run_merge(
        MergeConfiguration.model_validate(config),
        str(out_dir),
        options=MergeOptions(copy_tokenizer=True, write_model_card=False, quiet=True, random_seed=0),
    )
    (out_dir / "mergekit_config.yml").write_text(yaml.safe_dump(config))
    return config


def slerp(champion: Path, precursor: Path, t: float, out_dir: Path) -> dict:
    require_extra("mergekit", "merge", "SLERP merging")
    check_compatible(champion, precursor)
    return run_mergekit(slerp_config(champion, precursor, t), out_dir)


def average_config(models: list[Path]) -> dict:
    return {
        "merge_method": "linear",
        "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in models],
        "parameters": {"normalize": True},
        "dtype": "float32",
    }


def average(models: list[Path], out_dir: Path) -> dict:
    """The uniform average of `models` (weights of one architecture), by mergekit's linear merge."""
    require_extra("mergekit", "merge", "checkpoint averaging (merge.average_last)")
    for other in models[1:]:
        check_compatible(models[0], other)
    return run_mergekit(average_config(models), out_dir)


def average_candidate(store: Store, checkpoints: list[Candidate], k: int, out_prefix: str) -> Candidate:
    """The average of the last k checkpoints (by step) as a complete store tree and a candidate."""
    last = sorted(checkpoints, key=lambda c: c.step or 0)[-k:]
    name = f"avg-last{len(last)}"
    key = layout.merge_dir(out_prefix, name)
    keys = [c.key for c in last]
    if not store.is_complete(key):
        with tempfile.TemporaryDirectory() as tmp:
            config = average([model_dir(model_ref(store, c)) for c in last], Path(tmp) / "avg")
            store.put_tree(Path(tmp) / "avg", key, meta={"merge": {"method": "linear", "of": keys, "mergekit": config}})
    return Candidate(name=name, key=key, kind="merge", merge={"method": "average", "of": keys})


def ema_candidate(store: Store, checkpoints: list[Candidate], out_prefix: str) -> Candidate | None:
    """The weight average kept during training (train.ema) at the last checkpoint that has one, as a
    complete store tree and a candidate (None: the run kept none)."""
    with_ema = [c for c in checkpoints if "ema/model.safetensors" in store.tree_manifest(c.key)["files"]]
    if not with_ema:
        return None
    last = max(with_ema, key=lambda c: c.step or 0)
    name = f"ema-{last.step}"
    key = layout.merge_dir(out_prefix, name)
    local = fetch_tree_cached(store, last.key, include=lambda rel: rel.startswith("ema/")) / "ema"
    facts = json.loads((local / "ema.json").read_text())
    if not store.is_complete(key):
        store.put_tree(local, key, meta={"merge": {"method": "ema", "of": [last.key], **facts}})
    return Candidate(
        name=name, key=key, kind="merge", merge={"method": "ema", "decay": facts["decay"], "of": [last.key]}
    )


def resolve_pairs(
    pairs: list[tuple[str, str]], ranked: list[str], candidates: dict[str, Candidate]
) -> list[tuple[Candidate, Candidate]]:
    """Pair names → candidates. ranked: candidate names best first (ranked[0] the champion);
    candidates: every scored model by name, the precursor under the kind "precursor"."""
    aliases = {
        "champion": ranked[0],
        "runner_up": ranked[1] if len(ranked) > 1 else None,
        "precursor": next((n for n, c in candidates.items() if c.kind == "precursor"), None),
    }
    out = []
    for a, b in pairs:
        names = [aliases.get(x, x) for x in (a, b)]
        for alias, name in zip((a, b), names):
            if name not in candidates:
                raise UserError(
                    f"merge.pairs: no candidate {alias!r} in this sweep (choose champion, runner_up, "
                    f"precursor or one of: {', '.join(sorted(n for n in candidates if n))})"
                )
        if names[0] == names[1]:
            raise UserError(f"merge.pairs: {a!r} and {b!r} are the same model ({names[0]})")
        out.append((candidates[names[0]], candidates[names[1]]))
    return out


def merge_candidates(
    store: Store, base: Candidate, other: Candidate, ts: list[float], out_prefix: str, label: str | None = None
) -> list[Candidate]:
    """Merge a base (the champion) with another model (a store tree, or any reference: the input model
    may be a local directory or a hub model) at each t; each merge becomes a complete tree in the store.
    label names other pairs (the default pair is plain `slerp-t<t>`)."""
    champion = model_dir(model_ref(store, base))
    precursor = model_dir(model_ref(store, other))
    champion_key = base.key if base.key is not None else base.ref.spec
    precursor_key = other.key if other.key is not None else other.ref.spec
    out = []
    for t in ts:
        name = f"slerp-{label}-t{t:g}" if label else f"slerp-t{t:g}"
        key = layout.merge_dir(out_prefix, name)
        if not store.is_complete(key):
            with tempfile.TemporaryDirectory() as tmp:
                config = slerp(champion, precursor, t, Path(tmp))
                store.put_tree(
                    Path(tmp),
                    key,
                    meta={
                        "merge": {
                            "method": "slerp",
                            "t": t,
                            "champion": champion_key,
                            "precursor": precursor_key,
                            "mergekit": config,
                        }
                    },
                )
        out.append(
            Candidate(
                name=name, key=key, kind="merge", merge={"method": "slerp", "t": t, "of": [champion_key, precursor_key]}
            )
        )
    return out
