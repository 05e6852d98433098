"""Canary exposure (Secret Sharer, Carlini et al. 2019): how much more likely the model finds the
inserted secret than the other candidates of its format.

exposure = log2 |R| - log2 rank, where rank is the canary's position (1 = most likely) among all
candidates R ordered by the model's negative log-likelihood. When R is too large to enumerate,
the extrapolated form fits a skew-normal to the NLLs of a random sample of R and takes
-log2 Pr[NLL(r) <= NLL(canary)].
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def canary_rank(canary_nll: float, candidate_nll: np.ndarray) -> int:
    """1 + the number of candidates strictly more likely than the canary.

    Args:
        canary_nll: the canary's NLL; candidate_nll: every candidate's NLL (R,).
    """
    return 1 + int(np.sum(np.asarray(candidate_nll) < canary_nll))


def exposure_by_rank(canary_nll: float, candidate_nll: np.ndarray) -> float:
    """Exposure over the whole candidate space; `candidate_nll` holds every candidate of R
    (the canary's own secret included).

    Args:
        canary_nll: the canary's NLL; candidate_nll: every candidate's NLL (R,).
    Returns:
        log2 |R| - log2 rank, in bits (0 to log2 |R|).
    """
    return math.log2(len(candidate_nll)) - math.log2(canary_rank(canary_nll, candidate_nll))


def exposure_extrapolated(canary_nll: float, sample_nll: np.ndarray) -> float:
    """Exposure from a skew-normal fitted to a random sample of the candidates' NLLs.

    Args:
        canary_nll: the canary's NLL; sample_nll: a random sample of candidates' NLLs.
    Returns:
        -log2 of the fitted CDF at the canary's NLL, in bits.
    """
    a, loc, scale = stats.skewnorm.fit(np.asarray(sample_nll, dtype=np.float64))
    log_cdf = float(stats.skewnorm.logcdf(canary_nll, a, loc, scale))
    return -log_cdf / math.log(2)
