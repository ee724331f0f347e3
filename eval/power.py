"""What a paired exact McNemar test can see: the smallest drop in accuracy it detects at α with a
given power, for n paired items.

A drop δ = (losses − gains) / n is seen only through the discordant pairs. Two figures:

- **best case** (no discordance given): every changed item is a loss, none a gain. No model can be
  refused for a smaller drop than this, whatever it does: it is the floor of what the test can see.
- **at a discordance ψ** (the share of items on which the two models disagree, measured once both
  are scored): the drop detectable when ψ·n items change in all, losses outnumbering gains by δ·n.

Exact, not a normal approximation: with D ~ Binomial(n, ψ) discordant pairs and each a loss with
probability q = (ψ + δ) / 2ψ, the test rejects when min(losses, gains) ≤ c_D, the two-sided exact
binomial bound at α; power is summed over D. statsmodels has no exact McNemar power, hence this.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom

POWER = 0.8


def _critical(d: np.ndarray, alpha: float) -> np.ndarray:
    """For each discordant count D, the largest c with 2·P(X ≤ c) < α, X ~ Bin(D, 1/2) (−1: none)."""
    c = binom.ppf(alpha / 2, d, 0.5).astype(int)
    c = np.where(2 * binom.cdf(c, d, 0.5) < alpha, c, c - 1)
    return np.where(2 * binom.cdf(c + 1, d, 0.5) < alpha, c + 1, c)


def power(n: int, drop: float, alpha: float, discordance: float | None = None) -> float:
    """The chance the exact McNemar test rejects at α when accuracy falls by `drop` (a share of n)."""
    psi = drop if discordance is None else discordance
    if drop <= 0 or psi <= 0 or drop > psi:
        return 0.0
    d = np.arange(n + 1)
    c = _critical(d, alpha)
    q = (psi + drop) / (2 * psi)
    # reject when gains <= c (losses >= D - c) or losses <= c; c < 0: no rejection possible
    reject = np.where(c >= 0, binom.cdf(c, d, 1 - q) + binom.cdf(c, d, q), 0.0)
    reject = np.minimum(reject, 1.0)
    return float(np.sum(binom.pmf(d, n, psi) * reject))


def detectable_drop(n: int, alpha: float, discordance: float | None = None, target: float = POWER) -> float | None:
    """The smallest drop (a share of n) seen with power `target`; None when no drop can be (too few
    items, or at this discordance not even a drop of every changed item)."""
    if n <= 0:
        return None
    high = 1.0 if discordance is None else discordance
    if power(n, high, alpha, discordance) < target:
        return None
    low = 0.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if power(n, mid, alpha, discordance) < target else (low, mid)
    return high


def describe(n: int, alpha: float, discordance: float | None = None) -> str:
    drop = detectable_drop(n, alpha, discordance)
    if drop is None:
        return f"no drop detectable (n={n})"
    return f"≥ {drop * 100:.1f} points (n={n})"
