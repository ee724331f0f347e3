"""mergekit SLERP of champion and precursor: real merges of tiny models, stored as sweep candidates."""

import pytest
import torch
from safetensors.torch import load_file

from slm.errors import UserError
from slm.eval.merge import merge_candidates, slerp
from slm.eval.scores import Candidate
from slm.store import Store


def slerp_reference(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Independent spherical interpolation of two flattened tensors (mergekit's formula)."""
    va, vb = a.flatten().double(), b.flatten().double()
    na, nb = va / va.norm(), vb / vb.norm()
    dot = torch.clamp((na * nb).sum(), -1, 1)
    theta = torch.arccos(dot)
    if abs(dot) > 0.9995:
        out = (1 - t) * va + t * vb
    else:
        out = (torch.sin((1 - t) * theta) * va + torch.sin(t * theta) * vb) / torch.sin(theta)
    return out.reshape(a.shape).float()


def test_slerp_matches_an_independent_implementation(tiny_model_dir, tmp_path):
    champion, precursor = tiny_model_dir(10), tiny_model_dir(11)
    slerp(champion, precursor, 0.1, tmp_path / "merged")
    a, b = load_file(champion / "model.safetensors"), load_file(precursor / "model.safetensors")
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    name = "transformer.h.0.attn.c_attn.weight"
    assert torch.allclose(merged[name], slerp_reference(a[name], b[name], 0.1), atol=1e-5)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "merged").config.model_type == "gpt2"


def test_mismatched_architectures_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="architectures differ \\(n_embd: 32 vs 64"):
        slerp(tiny_model_dir(12), tiny_model_dir(13, n_embd=64), 0.1, tmp_path / "m")


def test_merge_candidates_are_complete_trees(tiny_model_dir, tmp_path):
    store = Store.open(str(tmp_path / "store"))
    store.put_tree(tiny_model_dir(14), "runs/x/checkpoints/checkpoint-5")
    store.put_tree(tiny_model_dir(15), "champions/l/v1-sft")
    base = Candidate(name="checkpoint-5", key="runs/x/checkpoints/checkpoint-5", kind="checkpoint")
    out = merge_candidates(
        store,
        base,
        Candidate(name="input model", key="champions/l/v1-sft", kind="precursor"),
        [0.1, 0.5],
        "runs/x/merges",
    )
    assert [c.name for c in out] == ["slerp-t0.1", "slerp-t0.5"]
    for cand in out:
        manifest = store.tree_manifest(cand.key)
        assert manifest["merge"]["method"] == "slerp" and "model.safetensors" in manifest["files"]
    # an input model outside the store (a local directory, as a user's first stage starts from)
    local = tiny_model_dir(16)
    other = Candidate(name="input model", kind="precursor", ref={"spec": str(local), "local": str(local)})
    merged = merge_candidates(store, base, other, [0.1], "runs/x/merges-local")
    assert merged[0].merge["of"] == ["runs/x/checkpoints/checkpoint-5", str(local)]
    assert store.is_complete(merged[0].key)


def test_merge_pairs_resolve_aliases_and_name_unknown_candidates():
    from slm.errors import UserError
    from slm.eval.merge import resolve_pairs
    from slm.eval.scores import Candidate

    candidates = {
        "checkpoint-30": Candidate(name="checkpoint-30", key="a", kind="checkpoint"),
        "checkpoint-60": Candidate(name="checkpoint-60", key="b", kind="checkpoint"),
        "precursor (x@v1)": Candidate(name="precursor (x@v1)", key="p", kind="precursor"),
    }
    ranked = ["checkpoint-60", "checkpoint-30"]
    pairs = resolve_pairs(
        [("champion", "precursor"), ("champion", "runner_up"), ("checkpoint-30", "precursor")], ranked, candidates
    )
    assert [(a.key, b.key) for a, b in pairs] == [("b", "p"), ("b", "a"), ("a", "p")]
    with pytest.raises(UserError, match="no candidate 'checkpoint-90'.*checkpoint-30, checkpoint-60"):
        resolve_pairs([("champion", "checkpoint-90")], ranked, candidates)
    with pytest.raises(UserError, match="same model"):
        resolve_pairs([("champion", "checkpoint-60")], ranked, candidates)


def test_the_average_of_the_last_k_checkpoints_is_their_mean_and_a_complete_tree(tiny_model_dir, tmp_path):
    from slm.eval.merge import average_candidate

    store = Store.open(str(tmp_path / "store"))
    for step, seed in ((5, 20), (10, 21), (15, 22)):
        store.put_tree(tiny_model_dir(seed), f"runs/x/checkpoints/checkpoint-{step}")
    plain = [
        Candidate(name=f"checkpoint-{s}", key=f"runs/x/checkpoints/checkpoint-{s}", kind="checkpoint", step=s)
        for s in (15, 5, 10)
    ]
    avg = average_candidate(store, plain, 2, "runs/x/merges")
    assert avg.name == "avg-last2" and avg.kind == "merge" and store.is_complete(avg.key)
    assert avg.merge["of"] == ["runs/x/checkpoints/checkpoint-10", "runs/x/checkpoints/checkpoint-15"]
    merged = load_file(tmp_path / "store" / avg.key / "model.safetensors")
    a, b = (load_file(tiny_model_dir(seed) / "model.safetensors") for seed in (21, 22))
    name = "transformer.h.0.attn.c_attn.weight"
    assert torch.allclose(merged[name], (a[name] + b[name]) / 2, atol=1e-6)
