"""The Gaussian-sum white-box one-run bound (after "Let's Ask Gauss", Agrawal et al. 2026).

In a white-box audit each canary's signal can be read off every observed segment (a round, or
the whole run): x_jt = the segment's movement along canary j, in units of one clipped canary
step. Under member s of the claimed family (privbench.audit.family) an included canary's x_jt is
Binomial(n_t, q) + N(0, s^2 v_t) and an excluded one's N(0, s^2 v_t): n_t DP steps per segment,
sampling rate q, v_t the claimed noise variance. Thresholding canaries into guesses throws
information away; instead the matched-filter sum S_j = sum_t (n_t / v_t) x_jt is, by the central
limit theorem, close to Gaussian in both worlds, with mean shift over spread

    mu(s) = A / (s sqrt(V)),   A = q sum_t n_t^2 / v_t,   V = sum_t n_t^2 / v_t.

The bound: a one-sided lower confidence bound on (mean_in - mean_out) (Welch t, alpha / 2) over
an upper confidence bound on the excluded canaries' spread (chi-square, alpha / 2) gives mu_LB;
then s_UB = A / (sqrt(V) mu_LB), and eps_LB = eps(s_UB) is the epsilon of that member of the
claimed family (Gaussian-DP in closed form when every step is an unsampled Gaussian, the PLD of
the scaled event otherwise; never a Gaussian fit to a sampled mechanism). Interference that the
model leaves out (real records' gradients on a canary's coordinates, cross-talk between random
canary directions) adds spread to both worlds, which only lowers mu_LB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from privbench.audit.estimators import EpsilonBound
from privbench.audit.family import MechanismFamily


@dataclass(frozen=True)
class WhiteBoxModel:
    """What the claim says one canary's observed segments are: n_t steps of sampling rate q and
    noise variance v_t each (in units of one clipped canary step)."""

    steps: np.ndarray  # (S,) DP steps per observed segment
    variances: np.ndarray  # (S,) claimed noise variance of each segment's sum
    sampling_rate: float

    @property
    def weights(self) -> np.ndarray:
        return self.steps / self.variances

    def statistic(self, x: np.ndarray) -> np.ndarray:
        """The matched-filter sum S_j of each canary's segments (rows)."""
        return np.asarray(x, np.float64) @ self.weights

    def mu(self, s: float = 1.0) -> float:
        """Mean shift over spread of S under member s of the family."""
        w = self.weights
        a = self.sampling_rate * float(w @ self.steps)
        v = float((w * w) @ self.variances)
        return a / (s * math.sqrt(v))

    def simulate(self, bits: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
        """Segments of canaries with inclusion `bits` (any leading shape) under member s."""
        bits = np.asarray(bits, bool)
        shape = (*bits.shape, len(self.steps))
        x = rng.normal(size=shape) * (s * np.sqrt(self.variances))
        k = rng.binomial(np.broadcast_to(self.steps.astype(np.int64), shape),
                         min(self.sampling_rate, 1.0))
        return x + np.where(bits[..., None], k, 0)


def mu_lower_bound(stat: np.ndarray, bits: np.ndarray, alpha: float) -> np.ndarray:
    """Lower confidence bound (1 - alpha) of (mean_in - mean_out) / sd_out along the last axis
    (canaries; `bits` marks the included ones): Welch's t bound of the mean difference at
    alpha / 2 over the chi-square upper bound of the excluded canaries' spread at alpha / 2
    (Bonferroni). Leading axes are independent audits (vectorised for the power simulation)."""
    stat = np.asarray(stat, np.float64)
    w1 = np.asarray(bits, bool).astype(np.float64)
    w0 = 1.0 - w1
    n1, n0 = w1.sum(axis=-1), w0.sum(axis=-1)
    m1 = (w1 * stat).sum(axis=-1) / n1
    m0 = (w0 * stat).sum(axis=-1) / n0
    v1 = (w1 * (stat - m1[..., None]) ** 2).sum(axis=-1) / (n1 - 1)
    v0 = (w0 * (stat - m0[..., None]) ** 2).sum(axis=-1) / (n0 - 1)
    se = np.sqrt(v1 / n1 + v0 / n0)
    dof = se**4 / ((v1 / n1) ** 2 / (n1 - 1) + (v0 / n0) ** 2 / (n0 - 1))
    diff_lb = m1 - m0 - stats.t.ppf(1 - alpha / 2, dof) * se
    sd_ub = np.sqrt(v0 * (n0 - 1) / stats.chi2.ppf(alpha / 2, n0 - 1))
    return np.maximum(diff_lb / sd_ub, 0.0)


def noise_scale_upper_bound(x: np.ndarray, bits: np.ndarray, model: WhiteBoxModel,
                            alpha: float) -> tuple[float, float, float]:
    """(s_UB, mu_LB, mu_hat) from each canary's segments x (m, S) and its inclusion bit."""
    bits = np.asarray(bits, bool)
    stat = model.statistic(x)
    mu_lb = float(mu_lower_bound(stat, bits, alpha))
    mu_hat = float((stat[bits].mean() - stat[~bits].mean()) / stat[~bits].std(ddof=1))
    s_ub = model.mu(1.0) / mu_lb if mu_lb > 0 else math.inf
    return s_ub, mu_lb, mu_hat


def gauss_sum_bound(x: np.ndarray, bits: np.ndarray, model: WhiteBoxModel,
                    family: MechanismFamily, *, alpha: float = 0.05,
                    claimed: float | None = None) -> EpsilonBound:
    """The Gaussian-sum one-run bound: eps_LB = eps(s_UB) in the claimed family.

    `claimed`: the claim's own epsilon; when s_UB >= 1 (the claim is not ruled out) eps_LB is
    capped there, so the coarser PLD grid of the family can never turn a consistent run into a
    FAIL. The ceiling is unbounded: perfectly separated canaries certify any epsilon.
    """
    bits = np.asarray(bits, bool)
    if bits.sum() < 2 or (~bits).sum() < 2:
        raise ValueError("the Gaussian-sum bound needs at least 2 included and 2 excluded canaries")
    s_ub, mu_lb, mu_hat = noise_scale_upper_bound(x, bits, model, alpha)
    eps = 0.0 if math.isinf(s_ub) else family.epsilon(s_ub)
    if claimed is not None and s_ub >= 1.0:
        eps = min(eps, claimed)
    return EpsilonBound(
        method="one-run gauss-sum", eps_lb=float(eps), ceiling=math.inf, alpha=alpha,
        n=len(bits), delta=family.delta,
        details={"mu_lb": mu_lb, "mu_hat": mu_hat, "mu_claimed": model.mu(1.0),
                 "noise_scale_ub": s_ub,
                 "family": "Gaussian DP (unsampled Gaussian steps)" if family.gaussian
                 else "the claimed event with scaled noise (PLD)",
                 "segments": len(model.steps), "m_canaries": len(bits)})
