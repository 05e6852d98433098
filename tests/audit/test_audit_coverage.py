"""Coverage of every epsilon estimator on mechanisms whose exact epsilon is known.

For the Gaussian mechanism on a scalar (sensitivity 1, noise sigma: exactly mu-GDP with
mu = 1/sigma, so its epsilon at delta is known in closed form) and randomised response (pure
epsilon), each estimator's eps_LB must stay at or below the true epsilon in at least 95% of seeded
trials. Each test also asserts a floor on the median tightness (eps_LB / true epsilon), so an
estimator that always answered 0 would fail; the tightness is printed (pytest -s shows it).
"""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from scipy import stats

from privbench.audit.estimators import (
    gdp_route_epsilon,
    planned_threshold,
    two_world_bound,
    two_world_epsilon,
)
from privbench.audit.gaussians import gdp_epsilon
from privbench.audit.gradient_canaries import DiracMechanism
from privbench.audit.one_run_bound import fl_one_shot_epsilon_box, one_run_bound, one_run_epsilon
from privbench.privacy.accounting import pld_epsilon

DELTA = 1e-5
ALPHA = 0.05
SIGMA = 1.0  # Gaussian mechanism: true eps at DELTA is gdp_epsilon(1 / SIGMA) = 4.38
RR_EPS = 2.0


def true_gaussian_epsilon(sigma: float = SIGMA) -> float:
    return float(gdp_epsilon(1.0 / sigma, DELTA))


def check(name: str, eps_lb: np.ndarray, true_eps: float, min_tightness: float) -> None:
    covered = float(np.mean(eps_lb <= true_eps + 1e-9))
    tightness = float(np.median(eps_lb)) / true_eps
    print(f"\n{name}: true eps {true_eps:.3f}, coverage {covered:.3f} over {len(eps_lb)} trials, "
          f"median eps_LB {np.median(eps_lb):.3f} (tightness {tightness:.2f}), "
          f"max {np.max(eps_lb):.3f}")
    assert covered >= 0.95, f"{name}: eps_LB above the true epsilon in {1 - covered:.1%} of trials"
    assert tightness >= min_tightness, f"{name}: median tightness {tightness:.2f} too low"


def test_gdp_epsilon_matches_the_pld_accountant():
    for mu in (0.5, 1.0, 2.0):
        want = pld_epsilon(dp_accounting.GaussianDpEvent(1.0 / mu), DELTA)
        assert float(gdp_epsilon(mu, DELTA)) == pytest.approx(want, rel=1e-6)


def test_one_run_ceiling_matches_the_paper():
    """All r guesses right, delta 0, 95%: about ln(r/3) (Steinke et al. 2023)."""
    got = one_run_epsilon(np.array([100, 1000, 10000]), np.array([100, 1000, 10000]), 10**5,
                          0.0, 0.05)
    np.testing.assert_allclose(got, [3.49, 5.81, 8.11], atol=0.01)


def gaussian_error_counts(rng, trials: int, n: int, sigma: float = SIGMA):
    """Errors of the threshold-0.5 test (fixed in advance) between N(0, s^2) and N(1, s^2)."""
    p_err = stats.norm.sf(0.5 / sigma)
    return rng.binomial(n, p_err, trials), rng.binomial(n, p_err, trials)


@pytest.mark.parametrize("route", ["clopper-pearson", "gdp"])
def test_two_world_fixed_threshold_covers_the_gaussian_mechanism(route):
    rng = np.random.default_rng(11)
    n = 2000
    fp, fn = gaussian_error_counts(rng, 2000, n)
    bound = two_world_epsilon if route == "clopper-pearson" else gdp_route_epsilon
    eps = bound(fp, n, fn, n, DELTA, ALPHA)
    # A single threshold test caps the Clopper-Pearson route far below the GDP one.
    check(f"two-world {route}, Gaussian", eps, true_gaussian_epsilon(),
          0.15 if route == "clopper-pearson" else 0.6)


def test_two_world_fixed_threshold_covers_randomised_response():
    rng = np.random.default_rng(12)
    n = 2000
    p_err = 1.0 / (1.0 + math.exp(RR_EPS))
    fp, fn = rng.binomial(n, p_err, 2000), rng.binomial(n, p_err, 2000)
    check("two-world clopper-pearson, randomised response",
          two_world_epsilon(fp, n, fn, n, 0.0, ALPHA), RR_EPS, 0.8)


@pytest.mark.parametrize("route", ["clopper-pearson", "gdp"])
def test_two_world_split_threshold_covers_the_gaussian_mechanism(route):
    rng = np.random.default_rng(13)
    n = 400
    eps = np.array([
        two_world_bound(rng.normal(1.0, SIGMA, n), rng.normal(0.0, SIGMA, n), delta=DELTA,
                        alpha=ALPHA, route=route).eps_lb
        for _ in range(100)])
    check(f"two-world {route} (split threshold), Gaussian", eps, true_gaussian_epsilon(),
          0.1 if route == "clopper-pearson" else 0.4)


def test_one_run_covers_the_gaussian_mechanism():
    """m canaries, each bit released through its own Gaussian mechanism (sensitivity 1)."""
    rng = np.random.default_rng(14)
    m, sigma = 200, 0.5
    eps = []
    for _ in range(60):
        bits = rng.random(m) < 0.5
        scores = bits + rng.normal(0.0, sigma, m)
        eps.append(one_run_bound(scores, bits, delta=DELTA, alpha=ALPHA, rng=rng).eps_lb)
    check("one-run (split), Gaussian", np.array(eps), true_gaussian_epsilon(sigma), 0.2)


@pytest.mark.parametrize("selection", ["split", "union"])
def test_one_run_covers_randomised_response(selection):
    rng = np.random.default_rng(15)
    m = 400
    keep = math.exp(RR_EPS) / (1 + math.exp(RR_EPS))
    eps = []
    for _ in range(80):
        bits = rng.random(m) < 0.5
        reported = np.where(rng.random(m) < keep, bits, ~bits).astype(float)
        eps.append(one_run_bound(reported, bits, delta=0.0, alpha=ALPHA, selection=selection,
                                 rng=rng).eps_lb)
    check(f"one-run ({selection}), randomised response", np.array(eps), RR_EPS, 0.3)


def test_fl_one_shot_covers_the_gaussian_mechanism():
    """k canary unit vectors summed with N(0, sigma^2 I_d): each canary is a Gaussian mechanism
    with sensitivity 1, so its true epsilon is that of mu = 1/sigma."""
    rng = np.random.default_rng(16)
    trials, k, d = 100, 50, 500
    c = rng.normal(size=(trials, k, d))
    c /= np.linalg.norm(c, axis=-1, keepdims=True)
    delta_model = c.sum(axis=1) + rng.normal(0.0, SIGMA, (trials, d))
    cos = np.einsum("tkd,td->tk", c, delta_model) / np.linalg.norm(delta_model, axis=-1)[:, None]
    point, lb = fl_one_shot_epsilon_box(cos, d, DELTA, ALPHA, grid=7)
    print(f"\nfl-one-shot point estimate: median {np.median(point):.3f}")
    check("fl-one-shot lower bound, Gaussian", lb, true_gaussian_epsilon(), 0.4)


@pytest.mark.parametrize("sampling_rate, sigma, route", [(1.0, 2.0, "gdp"),
                                                         (0.5, 1.0, "clopper-pearson")])
def test_multi_run_test_designed_on_the_claimed_mechanism_covers(sampling_rate, sigma, route):
    """The multi-run pipeline on its own mechanism: the Dirac canary's coordinate over 4 steps of
    DP-SGD (noise sigma, signal 1, sampled at rate q), the likelihood-ratio score, a threshold
    designed on simulated scores, and the two-world bound from 1,000 runs per world. At q = 1 the
    mechanism is mu-GDP with mu = 2 / sigma; at q < 1 its epsilon comes from the PLD accountant."""
    steps, runs = 4, 1000
    mechanism = DiracMechanism(step_scale=1.0, local_steps=steps, round_stds=np.array([sigma]),
                               sampling_rate=sampling_rate, signal=1.0)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(sigma))
        if sampling_rate < 1 else dp_accounting.GaussianDpEvent(sigma), steps)
    true_eps = pld_epsilon(event, DELTA)
    rng = np.random.default_rng(5)
    sim = [mechanism.simulate(1, False, included, 100_000, rng) for included in (True, False)]
    threshold = planned_threshold(*sim, n_in=runs, n_out=runs, delta=DELTA, alpha=ALPHA,
                                  route=route)
    eps_lb = np.array([
        two_world_bound(mechanism.simulate(1, False, True, runs, rng),
                        mechanism.simulate(1, False, False, runs, rng), delta=DELTA,
                        alpha=ALPHA, threshold=threshold, route=route).eps_lb
        for _ in range(200)])
    check(f"multi-run {route}, q = {sampling_rate}", eps_lb, true_eps,
          0.6 if route == "gdp" else 0.2)
