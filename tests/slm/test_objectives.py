"""The KL terms' pure parts: schedule, token selection, and the divergence itself."""

import math

import torch

from slm.objectives import KLTerm, supervised_positions, token_kl


def test_weight_is_off_before_start_then_ramps_to_coef():
    term = KLTerm("kl", torch.nn.Identity(), coef=0.2, start_step=10, warmup_steps=4)
    assert [term.weight(s) for s in (0, 9)] == [0.0, 0.0]
    assert [round(term.weight(s), 3) for s in (10, 11, 12, 13, 50)] == [0.05, 0.1, 0.15, 0.2, 0.2]
    assert KLTerm("kl", torch.nn.Identity(), coef=0.3).weight(0) == 0.3  # no warm-up: full weight at once


def test_only_supervised_tokens_and_at_most_the_last_k_of_each_row():
    labels = torch.tensor([[-100, -100, 5, 6, 7, 8, -100], [-100, 4, -100, 9, -100, -100, -100]])
    every = supervised_positions(labels, None)
    assert every.tolist() == [[False, True, True, True, True, False], [True, False, True, False, False, False]]
    last_two = supervised_positions(labels, 2)
    assert last_two.tolist() == [[False, False, False, True, True, False], [True, False, True, False, False, False]]


def test_kl_is_zero_for_equal_logits_and_matches_the_closed_form():
    logits = torch.randn(2, 3, 11)
    assert torch.allclose(token_kl(logits, logits), torch.zeros(2, 3), atol=1e-6)
    p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.9, 0.1]])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert math.isclose(float(token_kl(p.log(), q.log())), expected, rel_tol=1e-5)
    soft = token_kl(p.log(), q.log(), temperature=4.0)
    assert float(soft) < expected  # a higher temperature flattens both distributions
