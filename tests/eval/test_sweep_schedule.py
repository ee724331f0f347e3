"""How a sweep places its scoring tasks on a CPU cluster: a cold request cache makes the first candidate
run alone, and it then holds every CPU of the node; the rest run one CPU each, in parallel."""

import os

import pytest

from slm import REPO_ROOT

SHIPPED_MMLU = REPO_ROOT / "eval/data/mmlu"


@pytest.mark.slow
def test_a_lone_first_candidate_takes_the_node_and_the_rest_one_cpu_each(tiny_model_dir, tmp_path, monkeypatch):
    import ray

    from slm import cluster
    from slm.config import SweepSpec
    from slm.eval.scores import Candidate
    from slm.eval.sweep import sweep
    from slm.store import Store

    monkeypatch.setenv("SLM_CACHE", str(tmp_path / "cache"))  # a cold request cache
    store = Store.open(str(tmp_path / "store"))
    candidates = []
    for seed in (70, 71):
        key = f"runs/sft/sft-0123456789/checkpoints/checkpoint-{seed}"
        store.put_tree(tiny_model_dir(seed), key)
        candidates.append(Candidate(name=f"checkpoint-{seed}", key=key, kind="checkpoint"))
    spec = SweepSpec(mmlu_dir=str(SHIPPED_MMLU), subjects=["astronomy"], bench=None, mmlu_dev=False, batch_size=16)
    cluster.connect()
    try:
        scored = sweep(store, candidates, spec, "runs/sft/sft-0123456789/sweep")
        threads = [scored[c.name].scores.threads for c in candidates]
        assert threads == [os.cpu_count(), 1]
        # scored once: a second sweep reads both from the score cache
        again = sweep(store, candidates, spec, "runs/sft/sft-0123456789/sweep")
        assert [again[c.name].scores.threads for c in candidates] == threads
    finally:
        ray.shutdown()
    items = [scored[c.name].scores.mmlu.items["astronomy"] for c in candidates]
    assert all(len(i) == 152 for i in items)
