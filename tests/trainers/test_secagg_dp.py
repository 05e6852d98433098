"""Distributed DP, compression and hierarchy: the noise in the decoded sum is the noise claimed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from privbench.trainers.secagg import compression
from privbench.trainers.secagg.aggregate import SecureAggregation, SecureAggregator
from privbench.trainers.secagg.ddp_accounting import claim_for_rounds
from privbench.trainers.secagg.discrete_gaussian import (
    discrete_gaussian_variance,
    sample_discrete_gaussian,
)
from privbench.trainers.secagg.hierarchy import run_hierarchical
from privbench.trainers.secagg.protocol import Dropouts


def _unit_updates(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_discrete_gaussian_sampler_matches_the_exact_pmf():
    sigma = 0.8  # small, where N_Z differs visibly from a rounded continuous Gaussian
    draws = sample_discrete_gaussian(sigma, 200_000, np.random.default_rng(11))
    support = np.arange(-6, 7)
    pmf = np.exp(-(support**2) / (2 * sigma**2))
    pmf /= pmf.sum()
    observed = np.array([(draws == k).sum() for k in support])
    assert observed.sum() == draws.size  # nothing beyond 6 sigma-ish
    expected = pmf * draws.size
    keep = expected > 5
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    assert stats.chisquare(obs, exp).pvalue > 1e-4
    # the test has power: a rounded continuous Gaussian of the same sigma is rejected
    rounded = np.round(np.random.default_rng(12).normal(0, sigma, draws.size))
    obs_r = np.array([(rounded == k).sum() for k in support])
    assert stats.chisquare(np.append(obs_r[keep], obs_r[~keep].sum()), exp).pvalue < 1e-6


@pytest.mark.parametrize("drop", [0, 6])
def test_noise_in_the_decoded_sum_matches_the_claimed_noise(drop):
    n, d, z = 20, 4000, 1.0
    agg = SecureAggregator(SecureAggregation(clip=1.0, bits=12, noise_multiplier=z,
                                             design_contributors=12, seed=4), d)
    out = agg.run_round(_unit_updates(n, d, 1), 0, np.random.default_rng(2),
                        Dropouts(after_shares=frozenset(range(drop))))
    enc, result = agg.last_encoded, agg.last_sum
    assert len(out.contributors) == n - drop
    # the exact noise: decoded integers minus the contributors' quantised inputs
    noise = enc.fixed_point.from_ring(result.total) - enc.quantised[out.contributors].sum(axis=0)
    per_client = discrete_gaussian_variance(out.client_sigma)
    want = (n - drop) * per_client  # the realised contributors' noise, not the cohort's

    def accepts(var: float) -> bool:
        s2 = float((noise.astype(float) ** 2).mean())
        lo, hi = stats.chi2.ppf([1e-4, 1 - 1e-4], d) / d
        return lo * var < s2 < hi * var

    assert accepts(want)
    if drop:
        assert not accepts(n * per_client)  # assuming the whole cohort's noise is refuted
    # the claim's z never exceeds the noise present, and counts the others' noise only
    z_present = math.sqrt(want) / out.sensitivity
    assert out.noise_multiplier <= z_present
    assert out.noise_multiplier == pytest.approx(
        math.sqrt(n - drop - 1) * out.client_sigma / out.sensitivity, rel=1e-9)
    # dropouts below the design count push z below target; the claim says so
    if drop:
        assert out.noise_multiplier < math.sqrt(n - 1) * out.client_sigma / out.sensitivity
    # and the decoded float sum is the true sum plus that noise, scaled
    exact = _unit_updates(n, d, 1)[out.contributors].sum(axis=0)
    resid = out.total - exact
    assert abs(resid.std() - math.sqrt(want) / out.scale) < 0.05 * math.sqrt(want) / out.scale


def test_the_claim_is_accounted_from_realised_noise():
    few = claim_for_rounds(noise_multipliers=[1.0, 0.8], sampling_rate=1.0, delta=1e-5,
                           target_epsilon=4.0, clip=1.0, neighbouring="add_or_remove_one",
                           guarantee_against=["the server"])
    planned = claim_for_rounds(noise_multipliers=[1.0, 1.0], sampling_rate=1.0, delta=1e-5,
                               target_epsilon=4.0, clip=1.0, neighbouring="add_or_remove_one",
                               guarantee_against=["the server"])
    assert few.epsilon > planned.epsilon and few.noise_multiplier == 0.8
    alone = claim_for_rounds(noise_multipliers=[1.0, 0.0], sampling_rate=1.0, delta=1e-5,
                             target_epsilon=4.0, clip=1.0, neighbouring="add_or_remove_one",
                             guarantee_against=["the server"])
    assert math.isinf(alone.epsilon) and alone.guarantee_against == []


@pytest.mark.parametrize("mode", ["rotation", "topk", "topk+rotation"])
def test_compression_keeps_the_sensitivity_and_shrinks_uploads(mode):
    n, d = 8, 1000
    x = _unit_updates(n, d, 3)
    plain = SecureAggregator(SecureAggregation(clip=1.0, noise_multiplier=1.0,
                                               design_contributors=5), d)
    packed = SecureAggregator(SecureAggregation(clip=1.0, noise_multiplier=1.0,
                                                design_contributors=5, compression=mode,
                                                topk_fraction=0.25), d)
    base = plain.run_round(x, 0, np.random.default_rng(0))
    out = packed.run_round(x, 0, np.random.default_rng(0))
    enc = packed.last_encoded
    norms = np.linalg.norm(enc.quantised.astype(float), axis=1)
    assert (norms <= enc.sensitivity).all()  # what is noised keeps the clipping bound
    assert enc.sensitivity / enc.fixed_point.scale < 1.0 + 0.05 * math.sqrt(d) / 30
    if mode.startswith("topk"):
        assert out.uploaded_bytes < 0.5 * base.uploaded_bytes
    signs = compression.rotation_signs(d, 9)
    rotated = compression.rotate(x, signs)
    np.testing.assert_allclose(np.linalg.norm(rotated, axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(compression.unrotate(rotated, signs, d), x, atol=1e-12)


def test_three_level_hierarchy_completes_with_a_guarantee_per_observer():
    n, d = 24, 300
    x = _unit_updates(n, d, 8)
    agg = SecureAggregator(SecureAggregation(clip=1.0, bits=12, noise_multiplier=0.5,
                                             design_contributors=5, seed=1), d)
    groups = [list(range(g, n, 3)) for g in range(3)]
    out = run_hierarchical(agg, x, groups, 0, np.random.default_rng(3),
                           aggregator_noise_multiplier=0.5,
                           client_dropouts={1: Dropouts(after_shares=frozenset([1, 4]))})
    assert out.groups_contributing == [0, 1, 2]
    assert len(out.contributors) == 22 and 1 not in out.contributors
    z = out.noise_multipliers
    assert 0 < z["intermediate_aggregator"] < z["server"] == z["public"]
    resid = out.total - x[out.contributors].sum(axis=0)
    enc = agg.last_encoded
    expected = math.sqrt(22 * 0.5**2 / 4 + 3 * 0.5**2) * enc.sensitivity / enc.fixed_point.scale
    assert abs(resid.std() / expected - 1) < 0.15
    claims = {obs: claim_for_rounds(noise_multipliers=[v], sampling_rate=1.0, delta=1e-5,
                                    target_epsilon=8.0, clip=1.0,
                                    neighbouring="add_or_remove_one", guarantee_against=[obs])
              for obs, v in z.items()}
    assert claims["intermediate_aggregator"].epsilon > claims["server"].epsilon
