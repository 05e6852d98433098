"""Vectorised sampling of the discrete Gaussian N_Z(0, sigma^2) (Canonne, Kamath, Steinke 2020).

Algorithm 3 of CKS: propose from the discrete Laplace with scale t = floor(sigma) + 1 and accept
with probability exp(-(|y| - sigma^2 / t)^2 / (2 sigma^2)). The discrete Laplace is sampled as the
difference of two i.i.d. geometric variables with success probability 1 - exp(-1/t), which has
P(y) proportional to exp(-|y| / t) exactly. CKS evaluate the acceptance test with exact rational
arithmetic; here it is a float64 comparison, so the law is exact up to float64 rounding of the
acceptance probabilities (relative error ~1e-16), which is the usual vectorised compromise.
"""

from __future__ import annotations

import math

import numpy as np


def sample_discrete_gaussian(sigma: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` i.i.d. draws of N_Z(0, sigma^2) as int64 (all zeros when sigma = 0).

    Args:
        sigma: the scale; size: how many draws; rng: the noise stream.
    """
    out = np.zeros(size, dtype=np.int64)
    if sigma <= 0 or size == 0:
        return out
    t = math.floor(sigma) + 1
    p = -math.expm1(-1.0 / t)
    todo = np.arange(size)
    while todo.size:
        m = todo.size
        y = rng.geometric(p, m).astype(np.int64) - rng.geometric(p, m).astype(np.int64)
        accept_prob = np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        ok = rng.random(m) < accept_prob
        out[todo[ok]] = y[ok]
        todo = todo[~ok]
    return out


def discrete_gaussian_variance(sigma: float, terms: int = 60) -> float:
    """The exact variance of N_Z(0, sigma^2) (slightly below sigma^2 for small sigma).

    Args:
        sigma: the scale; terms: the sum's half-width in sigmas.
    """
    if sigma <= 0:
        return 0.0
    span = math.ceil(terms * sigma) + 1
    k = np.arange(-span, span + 1, dtype=np.float64)
    w = np.exp(-(k**2) / (2 * sigma**2))
    return float((k**2 * w).sum() / w.sum())
