"""Confidence intervals shared by every scorer."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def clopper_pearson(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact two-sided (1 - alpha) interval for a binomial proportion.

    Args:
        successes, trials: the counts (no trials: (0, 1)); alpha: one minus the confidence.
    Returns:
        (low, high) in [0, 1].
    """
    if trials <= 0:
        return (0.0, 1.0)
    lo = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes,
                                                         trials - successes + 1))
    hi = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha / 2, successes + 1,
                                                              trials - successes))
    return lo, hi


def mean_interval(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean and its two-sided (1 - alpha) Student-t interval.

    Args:
        values: the samples (N,); alpha: one minus the confidence.
    Returns:
        (mean, low, high); with fewer than 2 values all three are the mean.
    """
    values = np.asarray(values, dtype=np.float64)
    m = float(values.mean())
    if len(values) < 2:
        return m, m, m
    half = float(stats.t.ppf(1 - alpha / 2, len(values) - 1) * values.std(ddof=1)
                 / math.sqrt(len(values)))
    return m, m - half, m + half


def auc_interval(auc: float, n_pos: int, n_neg: int, alpha: float = 0.05) -> tuple[float, float]:
    """Hanley-McNeil (1982) normal interval for an ROC AUC, clipped to [0, 1].

    Args:
        auc: the measured AUC; n_pos, n_neg: members and non-members scored;
        alpha: one minus the confidence.
    Returns:
        (low, high).
    """
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc)
           + (n_neg - 1) * (q2 - auc * auc)) / max(n_pos * n_neg, 1)
    half = float(stats.norm.ppf(1 - alpha / 2)) * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)
