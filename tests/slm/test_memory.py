"""The per-worker memory estimate of the dry run (slm/memory.py), on the FF_3.13 shape built on the meta
device: 2.02B parameters, and ZeRO-2's model states as DeepSpeed's own estimator counts them."""

import pytest
from transformers import GPT2Config

from slm import memory
from slm.init_checks import count_parameters

FF313 = GPT2Config(n_embd=2048, n_layer=38, n_head=16, n_positions=1024, vocab_size=50257)


def test_the_ff313_shape_is_2_02b_parameters_and_its_zero2_states_split_over_8_gpus():
    parameters = count_parameters(FF313)
    assert memory.count(parameters) == "2.02B"
    shape = memory.Shape.of(FF313, parameters)
    one = memory.estimate(shape, 4, 1024, 1, 2, "bf16")
    eight = memory.estimate(shape, 4, 1024, 8, 2, "bf16")
    # 16-bit weights on every GPU; gradients, fp32 weights and Adam moments (18 bytes) split over the GPUs:
    # what DeepSpeed's own estimator says
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    for workers, estimate in ((1, one), (8, eight)):
        _, gpu = estimate_zero2_model_states_mem_needs(parameters, workers, 1, cpu_offload=False)
        assert estimate.model_states == gpu
    _, offloaded = estimate_zero2_model_states_mem_needs(parameters, 8, 1, cpu_offload=True)
    assert memory.estimate(shape, 4, 1024, 8, 2, "bf16", offload_optimizer=True).model_states == offloaded
    assert eight.model_states == pytest.approx(2 * parameters + 18 * parameters / 8, rel=1e-6)
    # 34·s·b·h bytes per layer (flash/SDPA keep no score matrix), and 10·b·s·V for the logits
    assert eight.activations == pytest.approx(38 * 34 * 1024 * 4 * 2048)
    assert eight.logits == pytest.approx(10 * 4 * 1024 * 50257)
    eager = memory.estimate(shape, 4, 1024, 8, 2, "bf16", scores_materialised=True)
    assert eager.activations - eight.activations == pytest.approx(38 * 5 * 16 * 1024**2 * 4)
    recompute = memory.estimate(shape, 4, 1024, 8, 2, "bf16", gradient_checkpointing=True)
    assert recompute.activations < eight.activations / 10
    offload = memory.estimate(shape, 4, 1024, 8, 2, "bf16", offload_optimizer=True)
    assert offload.model_states == pytest.approx(2 * parameters)
    assert 20 < eight.total / memory.GB < 24  # 8.6 GB of states, 10.8 of activations, 2.1 of logits


def test_the_other_zero_stages_follow_the_zero_paper():
    shape = memory.Shape(parameters=1_000_000, layers=1, hidden=8, heads=1, vocab=10)
    states = {z: memory.model_states(1_000_000, z, 4, False, "bf16") for z in (0, 1, 3)}
    assert states == {0: 16e6, 1: 2e6 + 2e6 + 12e6 / 4, 3: 16e6 / 4}
    assert memory.model_states(1_000_000, 2, 4, False, "fp32") == 4e6 + 4e6 / 4 + 8e6 / 4
    assert memory.estimate(shape, 1, 4, 4, 2, "fp32").model_states == 4e6 + 4e6 / 4 + 8e6 / 4
