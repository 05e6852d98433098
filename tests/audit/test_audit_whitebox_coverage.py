"""Coverage of the white-box one-run estimators on mechanisms whose exact epsilon is known.

Each canary is one copy of the claimed mechanism, as a Dirac canary on its own coordinate is:
T steps of a Gaussian with noise multiplier z, each joined with probability q. At q = 1 the
mechanism is mu-GDP (mu = sqrt(T) / z); at q < 1 its epsilon comes from the PLD accountant and
its trade-off curve is not Gaussian. eps_LB of the Gaussian-sum bound and of the f-DP analysis
(Mahloujifar et al. 2025) must stay at or below the true epsilon in at least 95% of seeded
trials, and their median tightness must clear a floor (an estimator that answered 0 would fail).
"""

from __future__ import annotations

import numpy as np
import pytest

from privbench.audit.family import MechanismFamily
from privbench.audit.fdp import design_guesses, fdp_one_run_bound
from privbench.audit.gauss_sum import WhiteBoxModel, gauss_sum_bound
from privbench.audit.gradient_canaries import dirac_log_likelihood_ratio
from privbench.privacy.accounting import pld_epsilon
from privbench.privacy.dp_events import poisson_gaussian_event

DELTA = 1e-5
ALPHA = 0.05


def check(name: str, eps_lb: np.ndarray, true_eps: float, min_tightness: float) -> None:
    covered = float(np.mean(eps_lb <= true_eps + 1e-9))
    tightness = float(np.median(eps_lb)) / true_eps
    print(f"\n{name}: true eps {true_eps:.3f}, coverage {covered:.3f} over {len(eps_lb)} trials, "
          f"median eps_LB {np.median(eps_lb):.3f} (tightness {tightness:.2f}), "
          f"max {np.max(eps_lb):.3f}")
    assert covered >= 0.95, f"{name}: eps_LB above the true epsilon in {1 - covered:.1%} of trials"
    assert tightness >= min_tightness, f"{name}: median tightness {tightness:.2f} too low"


def mechanism(q: float, steps: int, z: float):
    event = poisson_gaussian_event(z, q, steps)
    model = WhiteBoxModel(np.ones(steps), np.full(steps, z * z), q)
    return MechanismFamily.of(event, DELTA), model, pld_epsilon(event, DELTA)


@pytest.mark.parametrize("q, steps, z, m, floor", [
    (1.0, 5, 2.2, 1000, 0.7),  # mu-GDP, eps 4.46: the family is Gaussian DP in closed form
    (0.5, 10, 1.5, 1000, 0.65),  # sampled: the family is the PLD of the scaled event
    (0.1, 20, 0.8, 600, 0.3),  # small q: canary sums far from Gaussian
])
def test_gauss_sum_bound_covers_known_mechanisms(q, steps, z, m, floor):
    family, model, true_eps = mechanism(q, steps, z)
    rng = np.random.default_rng(21)
    eps = []
    for _ in range(80 if q == 1.0 else 40):
        bits = rng.random(m) < 0.5
        eps.append(gauss_sum_bound(model.simulate(bits, 1.0, rng), bits, model, family,
                                   alpha=ALPHA).eps_lb)
    check(f"gauss-sum q={q} T={steps} z={z} m={m}", np.array(eps), true_eps, floor)


def test_gauss_sum_bound_is_capped_at_the_claim_when_the_claim_stands():
    family, model, true_eps = mechanism(1.0, 5, 2.2)
    rng = np.random.default_rng(3)
    bits = rng.random(400) < 0.5
    x = model.simulate(bits, 1.0, rng)
    b = gauss_sum_bound(x, bits, model, family, alpha=ALPHA, claimed=true_eps)
    assert b.details["noise_scale_ub"] >= 1.0 and b.eps_lb <= true_eps


@pytest.mark.parametrize("q, steps, z, m, floor", [
    (1.0, 5, 2.2, 1000, 0.45),
    (0.5, 10, 1.5, 400, 0.25),
])
def test_fdp_one_run_bound_covers_known_mechanisms(q, steps, z, m, floor):
    """Guesses on the likelihood-ratio scores, guess counts designed on simulated canaries."""
    family, model, true_eps = mechanism(q, steps, z)
    rng = np.random.default_rng(22)

    def scores(x):
        return dirac_log_likelihood_ratio(x, model.steps, model.variances, q, 1.0)

    k_plus, k_minus = design_guesses(
        m, lambda bits, r: scores(model.simulate(bits, 1.0, r)), family, ALPHA, rng)
    eps = []
    for _ in range(40 if q == 1.0 else 20):
        bits = rng.random(m) < 0.5
        eps.append(fdp_one_run_bound(scores(model.simulate(bits, 1.0, rng)), bits, family,
                                     k_plus=k_plus, k_minus=k_minus, alpha=ALPHA,
                                     rng=rng).eps_lb)
    print(f"\nf-DP guesses: k+ {k_plus}, k- {k_minus}")
    check(f"f-DP q={q} T={steps} z={z} m={m}", np.array(eps), true_eps, floor)


@pytest.mark.parametrize(("q", "steps", "z"), [(1 / 3, 32, 1.2), (0.01, 500, 3.0), (1.0, 5, 0.6)])
def test_scalar_trade_off_curve_is_the_inverse_power_to_the_last_bit(q, steps, z):
    """The f-DP recursion's scalar curve (the upper envelope of the delta table's lines) gives
    exactly the numpy max over every line, so the fast path changes no bound."""
    family = MechanismFamily.of(poisson_gaussian_event(z, q, steps), 1e-5)
    rng = np.random.default_rng(0)
    ys = np.concatenate([rng.random(500), 10.0 ** -rng.uniform(0, 12, 500), [0.0, 1.0]])
    for s in (0.4, 1.0, 2.0):
        curve = family.curve(s)
        got = np.array([curve(float(y)) for y in ys])
        np.testing.assert_array_equal(got, family.inverse_power(ys, s))
        assert np.all(np.diff(got[np.argsort(ys)]) >= 0)  # a trade-off inverse: non-decreasing
