"""Rank correlation between proxy and final accuracy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["kendall_tau"]


def kendall_tau(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Kendall's tau-b of paired samples (ties in either sample handled), O(n^2).

    ``tau_b = (concordant - discordant) / sqrt((n0 - ties_x) * (n0 - ties_y))`` with
    ``n0 = n (n - 1) / 2``. Pairs with a NaN are dropped. NaN when fewer than two pairs remain
    or one sample is constant.
    """
    a = np.asarray(x, dtype=float).reshape(-1)
    b = np.asarray(y, dtype=float).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"x has {a.size} values but y has {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    n = a.size
    if n < 2:
        return math.nan
    upper = np.triu_indices(n, k=1)
    sign_a = np.sign(a[:, None] - a[None, :])[upper]
    sign_b = np.sign(b[:, None] - b[None, :])[upper]
    pairs = n * (n - 1) / 2
    untied_a = pairs - np.count_nonzero(sign_a == 0)
    untied_b = pairs - np.count_nonzero(sign_b == 0)
    if untied_a == 0 or untied_b == 0:
        return math.nan
    return float(np.sum(sign_a * sign_b) / math.sqrt(untied_a * untied_b))
