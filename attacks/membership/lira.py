"""LiRA (Carlini et al. 2022): a per-example likelihood-ratio test over shadow models.

For each record, the target's logit-scaled confidence is compared with Gaussians fitted to the
same record's confidences under shadow models trained with it (IN) and without it (OUT).
Online: log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out). Offline (OUT shadows only): the
one-sided log Pr[Z_out <= phi]. Fixed variance pools each side's spread over all records, which
is the stronger choice with few shadows; per-example variance fits each record's own spread.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

MIN_STD = 1e-3


def _side(shadow_phi: np.ndarray, mask: np.ndarray, fixed_variance: bool,
          side: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-record mean and standard deviation of phi over the shadows in `mask` (K, N)."""
    count = mask.sum(axis=0)
    if np.any(count == 0):
        missing = int(np.flatnonzero(count == 0)[0])
        raise ValueError(f"record {missing} has no {side} shadow model; train more shadows "
                         "(each record needs at least one IN and one OUT model)")
    mean = np.where(mask, shadow_phi, 0.0).sum(axis=0) / count
    resid = np.where(mask, shadow_phi - mean, 0.0)
    if fixed_variance:
        dof = max(int(count.sum() - len(count)), 1)
        std = np.full(mean.shape, np.sqrt((resid ** 2).sum() / dof))
    else:
        std = np.sqrt((resid ** 2).sum(axis=0) / np.maximum(count - 1, 1))
    return mean, np.maximum(std, MIN_STD)


def lira_online(target_phi: np.ndarray, shadow_phi: np.ndarray, shadow_in: np.ndarray, *,
                fixed_variance: bool = True) -> np.ndarray:
    """Online LiRA scores (higher means member) from target (N,) and shadow (K, N) signals."""
    shadow_in = np.asarray(shadow_in, dtype=bool)
    mu_in, s_in = _side(shadow_phi, shadow_in, fixed_variance, "IN")
    mu_out, s_out = _side(shadow_phi, ~shadow_in, fixed_variance, "OUT")
    return (stats.norm.logpdf(target_phi, mu_in, s_in)
            - stats.norm.logpdf(target_phi, mu_out, s_out))


def lira_offline(target_phi: np.ndarray, shadow_phi: np.ndarray, shadow_in: np.ndarray, *,
                 fixed_variance: bool = True) -> np.ndarray:
    """Offline LiRA scores: how far the target's phi lies above the OUT shadows' Gaussian."""
    mu_out, s_out = _side(shadow_phi, ~np.asarray(shadow_in, dtype=bool), fixed_variance, "OUT")
    return stats.norm.logcdf(target_phi, mu_out, s_out)
