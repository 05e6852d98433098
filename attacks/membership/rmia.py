"""RMIA (Zarifzadeh et al. 2024): a pairwise likelihood-ratio test against population records.

LR(x) = Pr(x | target) / Pr(x), with Pr(x) the mean of Pr(x | reference) over reference models.
score(x) = fraction of population records z with LR(x) / LR(z) > gamma. Offline (only reference
models that excluded x), Pr(x) is corrected for the missing IN models by the linear
approximation Pr(x) = ((1 + a) Pr_out(x) + (1 - a)) / 2 of the paper.

The fraction is a step function of LR(x): every x above all z scores 1. Ties are broken by LR(x)
itself (what infinitely many z would do), adding less than half a step, so the order of records
with different fractions never changes and the ROC can reach low FPRs.
"""

from __future__ import annotations

import numpy as np


def marginal_probability(ref_prob: np.ndarray, ref_in: np.ndarray | None = None, *,
                         offline_a: float | None = None) -> np.ndarray:
    """Pr(x) from reference probabilities (K, N); offline uses OUT references and `offline_a`."""
    ref_prob = np.asarray(ref_prob, dtype=np.float64)
    if offline_a is None:
        return ref_prob.mean(axis=0)
    out = (np.ones_like(ref_prob, dtype=bool) if ref_in is None
           else ~np.asarray(ref_in, dtype=bool))
    count = out.sum(axis=0)
    if np.any(count == 0):
        raise ValueError("offline RMIA: a record has no reference model trained without it; "
                         "use more reference models or the online mode")
    p_out = np.where(out, ref_prob, 0.0).sum(axis=0) / count
    return 0.5 * ((1 + offline_a) * p_out + (1 - offline_a))


def rmia(target_prob: np.ndarray, marginal: np.ndarray, target_prob_z: np.ndarray,
         marginal_z: np.ndarray, *, gamma: float = 1.0) -> np.ndarray:
    """RMIA scores in [0, 1] (higher means member) for N candidates against Z population records.

    A candidate that is itself among the z never counts itself (its ratio to itself is 1, not
    above gamma >= 1), and every candidate is divided by the same Z, so the score is one monotone
    function of LR(x) for all candidates alike.
    """
    tiny = 1e-30
    lr_x = np.asarray(target_prob) / np.maximum(marginal, tiny)
    lr_z = np.sort(np.asarray(target_prob_z) / np.maximum(marginal_z, tiny))
    # LR(x) / LR(z) > gamma  <=>  LR(z) < LR(x) / gamma
    below = np.searchsorted(lr_z, lr_x / gamma, side="left").astype(np.float64)
    n_z = float(max(len(lr_z), 1))
    tie_break = (np.arctan(np.log(np.maximum(lr_x, tiny))) / np.pi + 0.5) * 0.49
    return (below + tie_break) / n_z
