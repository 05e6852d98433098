"""One-run epsilon lower bounds from a single training run. Steinke, Nasr and Jagielski (2023): m
canaries, each included with probability 1/2; guesses on the k+ highest and k- lowest scores, with
(k+, k-) chosen on one half of the canaries and certified on the other, or a union bound over every
candidate. Federated one-shot (Andrew et al., ICLR 2024): cosines of canary updates with the model
delta, N(0, 1/d) for unseen canaries against a Gaussian fitted to inserted ones; the lower bound is
the smallest epsilon over a joint (1 - alpha) confidence box of the fitted mean and deviation. Each
result is an EpsilonBound (audit/estimators.py) with alpha, the canaries behind it and the design's
ceiling."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import special, stats

from privbench.audit.estimators import EpsilonBound
from privbench.audit.gaussians import EPS_SEARCH_MAX, gaussian_pair_epsilon


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


def correct_guesses(scores: np.ndarray, bits: np.ndarray, pairs: np.ndarray,
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
        v_sel = correct_guesses(scores[sel], bits[sel], pairs, tiebreak[sel])
        r = pairs.sum(axis=1)
        # One elementwise search for the selection's bounds and the design's ceiling (all
        # guesses right on the certification half; it reads no bits).
        k = len(pairs)
        searched = one_run_epsilon(np.concatenate([r, r]), np.concatenate([v_sel, r]),
                                   np.repeat([len(sel), m_cert], k), delta, alpha)
        eps_sel, ceiling = searched[:k], float(searched[k:].max())
        best = int(np.argmax(eps_sel))
        v = int(correct_guesses(scores[cert], bits[cert], pairs[best:best + 1],
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
        v_all = correct_guesses(scores, bits, pairs, tiebreak)
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
