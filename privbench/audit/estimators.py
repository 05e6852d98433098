"""Epsilon lower bounds from attack outcomes: pure statistics, vectorised with numpy.

Four estimators (formulas: shared/REFERENCES.md):
- two-world Clopper-Pearson: one-sided upper bounds of FPR and FNR (alpha/2 each) put into the
  hypothesis-testing region of (eps, delta)-DP;
- the Gaussian-DP route: the smallest mu consistent with those bounds, turned into eps at delta
  (valid when the mechanism's trade-off curve is Gaussian, as for the Gaussian mechanism);
- one run (Steinke, Nasr, Jagielski 2023): m canaries with inclusion probability 1/2, guesses on
  the k+ highest and k- lowest scores, with (k+, k-) chosen on one half of the canaries and
  certified on the other, or a union bound over every candidate;
- federated one-shot (Andrew et al., ICLR 2024): cosines of canary updates with the model delta,
  N(0, 1/d) for unseen canaries against a Gaussian fitted to inserted ones; the lower bound is the
  smallest epsilon over a joint (1 - alpha) confidence box of the fitted mean and deviation.

Every result carries alpha, the number of trials or canaries behind it, and the design's ceiling:
the largest epsilon the design could certify if the attack were perfect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import special, stats

from privbench.audit.gaussians import EPS_SEARCH_MAX, gaussian_pair_epsilon, gdp_epsilon


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


def one_run_p_value(eps: np.ndarray, r: np.ndarray, v: np.ndarray, m: int | np.ndarray,
                    delta: float) -> np.ndarray:
    """p(eps) = P[B >= v] + 2 m delta max_{i<=v} P[v-i <= B < v] / i, B ~ Bin(r, e^eps/(1+e^eps)).

    Under (eps, delta)-DP, r guesses get v or more right with probability at most p(eps).
    """
    eps, r, v, m = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                         for a in (eps, r, v, m)))
    q = special.expit(eps)  # e^eps / (1 + e^eps) without overflow
    # P[B >= v] as the regularised incomplete beta I_q(v, r - v + 1): scipy's ufuncs, not the
    # slower distribution objects (this runs inside a bisection).
    with np.errstate(invalid="ignore"):
        tail = np.where(v > r, 0.0, special.betainc(np.maximum(v, 1), np.maximum(r - v + 1, 1e-300),
                                                    q))
    if delta <= 0:
        return np.where(v <= 0, 1.0, tail)
    vmax = int(v.max()) if v.size else 0
    if vmax == 0:
        return np.ones_like(tail)
    i = np.arange(1, vmax + 1, dtype=np.float64)
    j = v[..., None] - i  # outcomes v-1, v-2, ..., v-vmax
    # The pmf only where the outcome exists (j >= 0): rows with small v need few of the vmax.
    valid = j >= 0
    pmf = np.zeros(j.shape)
    jv = j[valid]
    rv = np.broadcast_to(r[..., None], j.shape)[valid]
    ev = np.broadcast_to(eps[..., None], j.shape)[valid]
    pmf[valid] = np.exp(special.gammaln(rv + 1) - special.gammaln(jv + 1)
                        - special.gammaln(rv - jv + 1) + jv * special.log_expit(ev)
                        + (rv - jv) * special.log_expit(-ev))
    term = np.where(i <= v[..., None], np.cumsum(pmf, axis=-1) / i, 0.0).max(axis=-1)
    return np.where(v <= 0, 1.0, tail + 2 * m * delta * term)


def one_run_epsilon(r: np.ndarray, v: np.ndarray, m: int | np.ndarray, delta: float, beta: float,
                    iterations: int = 40) -> np.ndarray:
    """eps_LB = sup{eps : p(eps) < beta} (0 when p(0) >= beta), elementwise; p falls with eps."""
    r, v, m = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (r, v, m)))
    lo = np.zeros(r.shape)
    hi = np.full(r.shape, EPS_SEARCH_MAX)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        below = one_run_p_value(mid, r, v, m, delta) < beta
        lo = np.where(below, mid, lo)  # p(mid) < beta: the sup lies at or above mid
        hi = np.where(below, hi, mid)
    nothing = one_run_p_value(np.zeros(r.shape), r, v, m, delta) >= beta
    return np.where(nothing | (r <= 0), 0.0, lo)


def guess_candidates(m: int, grid: int = 12) -> np.ndarray:
    """Candidate (k+, k-) pairs: k+ only, k- only, and both, for k on a geometric grid up to m."""
    ks = np.unique(np.round(np.geomspace(1, max(m, 1), grid)).astype(int))
    pairs = [(k, 0) for k in ks] + [(0, k) for k in ks] + [(k, k) for k in ks if 2 * k <= m]
    return np.array(pairs, dtype=np.int64)


def _correct_guesses(scores: np.ndarray, bits: np.ndarray, pairs: np.ndarray,
                     tiebreak: np.ndarray) -> np.ndarray:
    """Correct guesses of each (k+, k-): 'in' for the k+ highest scores, 'out' for the k- lowest."""
    order = np.lexsort((tiebreak, -scores))  # highest score first; ties broken at random
    b = bits[order].astype(np.int64)
    top_in = np.concatenate([[0], np.cumsum(b)])
    bottom_out = np.concatenate([[0], np.cumsum(1 - b[::-1])])
    return top_in[pairs[:, 0]] + bottom_out[pairs[:, 1]]


def one_run_bound(scores: np.ndarray, bits: np.ndarray, *, delta: float, alpha: float = 0.05,
                  selection: Literal["split", "union"] = "split",
                  rng: np.random.Generator | None = None) -> EpsilonBound:
    """Steinke-Nasr-Jagielski one-run epsilon lower bound from canary scores (higher = 'in').

    `bits` are the true inclusion bits (1 = trained on). With selection "split", (k+, k-) is the
    candidate with the best bound on a random half of the canaries and is certified on the other
    half; with "union" every candidate is certified on all canaries at alpha / (candidates).
    Guesses depend only on scores (and, for "split", on the selection half's bits).
    """
    scores = np.asarray(scores, dtype=np.float64)
    bits = np.asarray(bits).astype(bool)
    if scores.shape != bits.shape or scores.ndim != 1:
        raise ValueError("scores and bits must be 1-D arrays of the same length")
    rng = rng if rng is not None else np.random.default_rng(0)
    m = len(scores)
    tiebreak = rng.random(m)
    if selection == "split":
        perm = rng.permutation(m)
        sel, cert = perm[: m // 2], perm[m // 2:]
        m_cert = len(cert)
        pairs = guess_candidates(min(len(sel), m_cert))
        v_sel = _correct_guesses(scores[sel], bits[sel], pairs, tiebreak[sel])
        r = pairs.sum(axis=1)
        # One elementwise search for the selection's bounds and the design's ceiling (all
        # guesses right on the certification half; it reads no bits).
        k = len(pairs)
        searched = one_run_epsilon(np.concatenate([r, r]), np.concatenate([v_sel, r]),
                                   np.repeat([len(sel), m_cert], k), delta, alpha)
        eps_sel, ceiling = searched[:k], float(searched[k:].max())
        best = int(np.argmax(eps_sel))
        v = int(_correct_guesses(scores[cert], bits[cert], pairs[best:best + 1],
                                 tiebreak[cert])[0])
        eps = float(one_run_epsilon(r[best], v, m_cert, delta, alpha))
        k_plus, k_minus = (int(x) for x in pairs[best])
        extra = {"selection": "split halves", "m_selection": len(sel),
                 "selection_eps": float(eps_sel[best])}
        n = m_cert
    elif selection == "union":
        pairs = guess_candidates(m)
        beta = alpha / len(pairs)
        r = pairs.sum(axis=1)
        v_all = _correct_guesses(scores, bits, pairs, tiebreak)
        k = len(pairs)
        searched = one_run_epsilon(np.concatenate([r, r]), np.concatenate([v_all, r]), m, delta,
                                   beta)  # the bounds and the ceiling in one search
        eps_all, ceiling = searched[:k], float(searched[k:].max())
        best = int(np.argmax(eps_all))
        eps, v = float(eps_all[best]), int(v_all[best])
        k_plus, k_minus = (int(x) for x in pairs[best])
        extra = {"selection": f"union bound over {len(pairs)} candidates"}
        n = m
    else:
        raise ValueError(f"selection = {selection!r}: must be 'split' or 'union'")
    return EpsilonBound(
        method="one-run", eps_lb=eps, ceiling=ceiling, alpha=alpha, n=n, delta=delta,
        details={**extra, "k_plus": k_plus, "k_minus": k_minus, "guesses": k_plus + k_minus,
                 "correct": v, "m_canaries": m})


# ---------------------------------------------------------------------------------------------
# Federated one-shot (Andrew et al., ICLR 2024)


def fl_one_shot_epsilon_box(cosines: np.ndarray, dim: int, delta: float, alpha: float,
                            grid: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """(point estimate, lower bound) for each row of inserted-canary cosines (..., k).

    Point estimate: eps between N(mu_hat, s_hat^2) and N(0, 1/dim). Lower bound: the minimum over
    a grid of the box mu in t-interval x s in chi-square interval, each at alpha/2 (joint 1-alpha).
    """
    x = np.asarray(cosines, dtype=np.float64)
    k = x.shape[-1]
    if k < 2:
        raise ValueError("the one-shot estimate needs at least 2 inserted canaries")
    mu, s = x.mean(axis=-1), x.std(axis=-1, ddof=1)
    s0 = 1.0 / math.sqrt(dim)
    point = gaussian_pair_epsilon(mu, s, 0.0, s0, delta)
    half = stats.t.ppf(1 - alpha / 4, k - 1) * s / math.sqrt(k)
    s_lo = s * np.sqrt((k - 1) / stats.chi2.ppf(1 - alpha / 4, k - 1))
    s_hi = s * np.sqrt((k - 1) / stats.chi2.ppf(alpha / 4, k - 1))
    t = np.linspace(0.0, 1.0, grid)
    mus = (mu - half)[..., None] + (2 * half)[..., None] * t  # (..., grid)
    # The mean closest to the null's 0 is always on the grid: it minimises the mean shift.
    mus = np.concatenate([mus, np.clip(0.0, mu - half, mu + half)[..., None]], axis=-1)
    sds = s_lo[..., None] * (s_hi / s_lo)[..., None] ** t
    sds = np.concatenate([sds, np.clip(s0, s_lo, s_hi)[..., None]], axis=-1)
    box = gaussian_pair_epsilon(mus[..., :, None], sds[..., None, :], 0.0, s0, delta)
    return point, box.min(axis=(-2, -1))


def fl_one_shot_bound(cosines: np.ndarray, dim: int, *, delta: float,
                      alpha: float = 0.05) -> EpsilonBound:
    """Andrew et al.'s one-shot epsilon from the cosines of k inserted canaries in dimension dim.

    The bound assumes, as the method does, that cosines are Gaussian (unseen ones N(0, 1/dim));
    it has no finite ceiling, since a perfectly separated canary set can certify any epsilon.
    """
    x = np.asarray(cosines, dtype=np.float64)
    point, lb = fl_one_shot_epsilon_box(x, dim, delta, alpha)
    return EpsilonBound(
        method="fl-one-shot", eps_lb=float(lb), ceiling=math.inf, alpha=alpha, n=len(x),
        delta=delta,
        details={"point_estimate": float(point), "cos_mean": float(x.mean()),
                 "cos_std": float(x.std(ddof=1)), "null_std": 1.0 / math.sqrt(dim), "dim": dim,
                 "assumption": "Gaussian cosines (Andrew et al. 2024); ceiling unbounded"})
