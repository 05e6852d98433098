"""Epsilon lower bounds from attack outcomes: pure statistics, vectorised with numpy.

The multi-run (two-world) estimators are here; the one-run ones (Steinke et al. 2023, and the
federated one-shot of Andrew et al. 2024) are in audit/one_run_bound.py, the f-DP and Gaussian-sum
white-box ones in audit/fdp.py and audit/gauss_sum.py. Formulas: shared/REFERENCES.md.
- two-world Clopper-Pearson: one-sided upper bounds of FPR and FNR (alpha/2 each) put into the
  hypothesis-testing region of (eps, delta)-DP;
- the Gaussian-DP route: the smallest mu consistent with those bounds, turned into eps at delta
  (valid when the mechanism's trade-off curve is Gaussian, as for the Gaussian mechanism).

Every result is an `EpsilonBound`: alpha, the number of trials or canaries behind it, and the
design's ceiling: the largest epsilon the design could certify if the attack were perfect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats

from privbench.audit.gaussians import gdp_epsilon


@dataclass(frozen=True)
class EpsilonBound:
    """An epsilon lower bound at confidence 1 - alpha, with what it rests on."""

    method: str
    eps_lb: float
    ceiling: float
    alpha: float
    n: int
    delta: float
    details: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Two worlds: N trials with the canary in, N without.


def binomial_upper(k: np.ndarray, n: np.ndarray, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson upper bound of a binomial proportion k / n."""
    k, n = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64))
    with np.errstate(invalid="ignore"):
        ub = stats.beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1e-300))
    return np.where(k >= n, 1.0, ub)


def _region_epsilon(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """max(ln((1 - delta - FPR) / FNR), ln((1 - delta - FNR) / FPR)), floored at 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log((1 - delta - fpr) / fnr)
        b = np.log((1 - delta - fnr) / fpr)
    e = np.fmax(np.nan_to_num(a, nan=0.0, posinf=np.inf), np.nan_to_num(b, nan=0.0))
    return np.maximum(e, 0.0)


def two_world_epsilon(false_pos: np.ndarray, n_out: np.ndarray, false_neg: np.ndarray,
                      n_in: np.ndarray, delta: float, alpha: float) -> np.ndarray:
    """Clopper-Pearson epsilon lower bound from error counts of a test fixed in advance."""
    fpr = binomial_upper(false_pos, n_out, alpha / 2)
    fnr = binomial_upper(false_neg, n_in, alpha / 2)
    return _region_epsilon(fpr, fnr, delta)


def gdp_route_mu(false_pos: np.ndarray, n_out: np.ndarray, false_neg: np.ndarray,
                 n_in: np.ndarray, alpha: float) -> np.ndarray:
    """Lower bound of mu: Phi^-1(1 - FPR_ub) - Phi^-1(FNR_ub), bounds at alpha/2 each."""
    fpr = binomial_upper(false_pos, n_out, alpha / 2)
    fnr = binomial_upper(false_neg, n_in, alpha / 2)
    return np.maximum(np.nan_to_num(stats.norm.isf(fpr) - stats.norm.ppf(fnr), nan=0.0), 0.0)


def gdp_route_epsilon(false_pos: np.ndarray, n_out: np.ndarray, false_neg: np.ndarray,
                      n_in: np.ndarray, delta: float, alpha: float) -> np.ndarray:
    """Gaussian-DP epsilon lower bound: the mu lower bound's epsilon at delta.

    Valid when the mechanism is mu-GDP for some mu (its trade-off curve is Gaussian), as for the
    Gaussian mechanism and, by the central limit theorem, approximately for DP-SGD; not for
    mechanisms like randomised response whose trade-off curve is not Gaussian.
    """
    return gdp_epsilon(gdp_route_mu(false_pos, n_out, false_neg, n_in, alpha), delta)


def _errors_at_thresholds(scores_in: np.ndarray, scores_out: np.ndarray,
                          thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False positives (out > t) and false negatives (in <= t) at each threshold t."""
    out_sorted, in_sorted = np.sort(scores_out), np.sort(scores_in)
    fp = len(out_sorted) - np.searchsorted(out_sorted, thresholds, side="right")
    fn = np.searchsorted(in_sorted, thresholds, side="right")
    return fp, fn


def planned_threshold(sim_in: np.ndarray, sim_out: np.ndarray, *, n_in: int, n_out: int,
                      delta: float, alpha: float,
                      route: Literal["clopper-pearson", "gdp"] = "clopper-pearson") -> float:
    """The threshold with the largest bound at the error counts expected, for n_in and n_out
    trials, from scores simulated under the mechanism as claimed: a test fixed before any trial.

    Candidates span both tails (false-positive rates down to 1 / n_out, false-negative rates
    down to 1 / n_in), where the Clopper-Pearson route finds its best tests.
    """
    sim_in, sim_out = np.asarray(sim_in, np.float64), np.asarray(sim_out, np.float64)
    candidates = np.unique(np.concatenate([
        np.quantile(sim_out, 1 - np.geomspace(1 / n_out, 0.5, 60)),
        np.quantile(sim_in, np.geomspace(1 / n_in, 0.5, 60))]))
    fp, fn = _errors_at_thresholds(sim_in, sim_out, candidates)
    expected_fp, expected_fn = fp / len(sim_out) * n_out, fn / len(sim_in) * n_in
    bound = two_world_epsilon if route == "clopper-pearson" else gdp_route_epsilon
    merit = bound(expected_fp, np.full(len(candidates), n_out), expected_fn,
                  np.full(len(candidates), n_in), delta, alpha)
    return float(candidates[int(np.argmax(merit))])


def two_world_bound(scores_in: np.ndarray, scores_out: np.ndarray, *, delta: float,
                    alpha: float = 0.05, threshold: float | None = None,
                    route: Literal["clopper-pearson", "gdp"] = "clopper-pearson") -> EpsilonBound:
    """Epsilon lower bound from attack scores of trials in each world (higher = 'in').

    With `threshold` given the test is fixed in advance and all trials certify. Otherwise the
    threshold that maximises the bound on the first half of each world's trials is certified on
    the second half, so the choice never sees the trials that certify it.
    """
    scores_in = np.asarray(scores_in, dtype=np.float64)
    scores_out = np.asarray(scores_out, dtype=np.float64)
    bound = two_world_epsilon if route == "clopper-pearson" else gdp_route_epsilon
    selection: dict[str, Any] = {"threshold": "fixed in advance"}
    # Rows of (false positives, non-member trials, false negatives, member trials), bounded in
    # one vectorised call: the certified test, the design's ceiling, and the selection's bound.
    fp_rows, out_rows, fn_rows, in_rows = [], [], [], []
    if threshold is None:
        hi, ho = len(scores_in) // 2, len(scores_out) // 2
        sel_in, sel_out = scores_in[:hi], scores_out[:ho]
        scores_in, scores_out = scores_in[hi:], scores_out[ho:]
        candidates = np.unique(np.concatenate([sel_in, sel_out]))
        fp, fn = _errors_at_thresholds(sel_in, sel_out, candidates)
        if route == "gdp":  # epsilon rises with mu: maximise mu, no epsilon search per threshold
            merit = gdp_route_mu(fp, len(sel_out), fn, len(sel_in), alpha)
        else:
            merit = two_world_epsilon(fp, len(sel_out), fn, len(sel_in), delta, alpha)
        best = int(np.argmax(merit))
        threshold = float(candidates[best])
        selection = {"threshold": "chosen on the first half of the trials"}
        fp_rows.append(fp[best])
        out_rows.append(len(sel_out))
        fn_rows.append(fn[best])
        in_rows.append(len(sel_in))
    fp, fn = _errors_at_thresholds(scores_in, scores_out, np.array([threshold]))
    n_in, n_out = len(scores_in), len(scores_out)
    eps_all = bound(np.array([fp[0], 0, *fp_rows]), np.array([n_out, n_out, *out_rows]),
                    np.array([fn[0], 0, *fn_rows]), np.array([n_in, n_in, *in_rows]),
                    delta, alpha)
    eps, ceiling = float(eps_all[0]), float(eps_all[1])
    if fp_rows:
        selection["selection_eps"] = float(eps_all[2])
    return EpsilonBound(
        method=f"two-world {route}", eps_lb=eps, ceiling=ceiling, alpha=alpha,
        n=n_in + n_out, delta=delta,
        details={**selection, "threshold_value": threshold, "false_positives": int(fp[0]),
                 "false_negatives": int(fn[0]), "n_in": n_in, "n_out": n_out})


# ---------------------------------------------------------------------------------------------
# One run (Steinke, Nasr, Jagielski 2023)


# ---------------------------------------------------------------------------------------------
# Federated one-shot (Andrew et al., ICLR 2024)


