"""What a paired exact McNemar test can see, checked against the test itself."""

import numpy as np
import pytest
from scipy.stats import binomtest

from slm.eval.power import detectable_drop, power


def simulated_power(n, drop, alpha, psi, runs=3000, seed=0):
    """The gate's own test (scipy's exact binomial on the discordant pairs) on simulated pairs."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(runs):
        u = rng.random(n)
        lost = int((u < (psi + drop) / 2).sum())
        gained = int(((u >= (psi + drop) / 2) & (u < psi)).sum())
        hits += lost + gained > 0 and binomtest(lost, lost + gained, 0.5).pvalue < alpha
    return hits / runs


@pytest.mark.parametrize("n, drop, psi", [(106, 0.1, 0.2), (25, 0.3, 0.3), (120, 0.05, 0.15)])
def test_the_exact_power_is_what_the_test_itself_does(n, drop, psi):
    assert power(n, drop, 0.05, psi) == pytest.approx(simulated_power(n, drop, 0.05, psi), abs=0.03)


def test_what_the_configured_item_counts_can_see():
    # the best case: six losses and no gain are the fewest a two-sided exact test at 0.05 refuses
    assert detectable_drop(6, 0.05) == pytest.approx(0.963, abs=0.002)
    assert detectable_drop(5, 0.05) is None  # five items: not even five losses of five are seen
    per_category = detectable_drop(25, 0.05)
    assert 0.29 < per_category < 0.31  # a 25-prompt category cannot see a 5-point (or a 25-point) drop
    assert detectable_drop(106, 0.05) < detectable_drop(106, 0.05, discordance=0.2)  # churn hides drops
    assert detectable_drop(14042, 0.05) < 0.001
    assert detectable_drop(25, 0.05, discordance=0.1) is None  # 2.5 changed items: nothing to see
    d = detectable_drop(300, 0.05, discordance=0.2)
    assert power(300, d, 0.05, 0.2) == pytest.approx(0.8, abs=0.01)
