"""Audit power, stated: the smallest real epsilon a design refutes with probability >= 0.9.

A PASS says little without it. The design (canaries, surface, estimator, alpha) is simulated on
members of the claimed family (privbench.audit.family: the claimed event with noise times s < 1,
so real epsilon eps(s) above the claim) through the claim's white-box model of the canary
signals; the power at s is the fraction of simulated audits whose verdict is FAIL. The search
is a bisection on log s with common random numbers, so the power is monotone in s. The model is
the idealised white-box view (no interference from real records or other canaries), so the
figure is what the design can do at best: real runs, with more spread, can only do worse.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from privbench.audit.family import MechanismFamily
from privbench.audit.gauss_sum import WhiteBoxModel

POWER = 0.9
SIMULATIONS = 60

# (x (n, m, S) canary segments of n audits, bits (n, m)) -> (n,) True where the verdict is FAIL.
Refutes = Callable[[np.ndarray, np.ndarray], np.ndarray]


def design_power(model: WhiteBoxModel, family: MechanismFamily, m: int, refutes: Refutes, *,
                 seed: int = 0, simulations: int = SIMULATIONS,
                 power: float = POWER) -> dict[str, float]:
    """{"eps_caught": smallest eps(s) refuted with probability >= power (inf if none down to
    s = 1/64), "noise_scale": that s, "power_at_claim_x2": the power at twice the claimed
    noise-to-signal ratio (s = 1/2)}."""
    rng = np.random.default_rng([seed, 0x90E7])
    bits = rng.random((simulations, m)) < 0.5
    normals = rng.normal(size=(simulations, m, len(model.steps)))
    uniforms = rng.random((simulations, m, int(model.steps.max()), len(model.steps)))
    # Binomial(n_t, q) draws from fixed uniforms: the same draws at every s.
    valid = np.arange(int(model.steps.max()))[:, None] < model.steps[None, :]
    k = ((uniforms < model.sampling_rate) & valid).sum(axis=2)
    sd = np.sqrt(model.variances)
    signal = np.where(bits[..., None], k, 0).astype(np.float64)  # the same at every s

    def rate(s: float) -> float:
        x = normals * (s * sd) + signal
        return float(np.mean(refutes(x, bits)))

    lo, hi = math.log(1 / 64), 0.0  # log s: refuted at lo (hopefully), not at hi
    at_half = rate(0.5)
    if rate(math.exp(lo)) < power:
        return {"eps_caught": math.inf, "noise_scale": 0.0, "power_at_claim_x2": at_half}
    for _ in range(9):
        mid = 0.5 * (lo + hi)
        if rate(math.exp(mid)) >= power:
            lo = mid
        else:
            hi = mid
    s = math.exp(lo)
    # An upper estimate of eps(s): the statement "caught eps >= X" errs on the honest side.
    return {"eps_caught": family.epsilon_upper(s), "noise_scale": s, "power_at_claim_x2": at_half}
