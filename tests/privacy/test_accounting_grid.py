"""The Claim's epsilon against an independent dp_accounting computation on a grid of settings,
from tiny epsilons to about 100 and delta down to 1e-10; and the refusals and fallbacks."""

from __future__ import annotations

import itertools
import math

import dp_accounting
import pytest
from dp_accounting import pld, rdp

from privbench.privacy import accounting
from privbench.privacy.claim import claim_for_poisson_gaussian, claim_from_event

# 5 rates x 5 noise multipliers x 4 step counts = 100 settings, each at one of two deltas.
RATES = (0.01, 0.05, 0.2, 0.6, 1.0)
NOISES = (0.25, 0.5, 1.0, 2.0, 8.0)
STEPS = (1, 3, 10, 30)
COARSE_GRID = 5e-2
# Fewer Renyi orders than dp_accounting's ~150 (its RDP dominates the run time); still valid.
ORDERS = (1.05, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0,
          20.0, 24.0, 32.0, 48.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
# A few settings at the grid a Claim picks by default (1e-4 up to epsilon 10, coarser above).
DEFAULT_POLICY = [(0.05, 2.0, 10, 1e-5), (0.2, 1.0, 3, 1e-10), (1.0, 0.25, 1, 1e-10),
                  (0.6, 0.25, 30, 1e-10), (0.01, 8.0, 30, 1e-5)]


def _event(q: float, z: float, steps: int) -> dp_accounting.DpEvent:
    inner = dp_accounting.GaussianDpEvent(z)
    if q < 1:
        inner = dp_accounting.PoissonSampledDpEvent(q, inner)
    return dp_accounting.SelfComposedDpEvent(inner, steps)


def _independent_pld(q: float, z: float, steps: int, delta: float, grid: float) -> float:
    return pld.PLDAccountant(value_discretization_interval=grid).compose(
        _event(q, z, steps)).get_epsilon(delta)


def _independent_rdp(q: float, z: float, steps: int, delta: float, orders=None) -> float:
    acc = rdp.RdpAccountant(orders=list(orders) if orders else None)
    return acc.compose(_event(q, z, steps)).get_epsilon(delta)


def _claim(q: float, z: float, steps: int, delta: float, grid: float | None, orders=None):
    return claim_for_poisson_gaussian(
        noise_multiplier=z, sampling_rate=q, steps=steps, delta=delta, target_epsilon=math.inf,
        clip=1.0, unit="example", neighbouring="add_or_remove_one", guarantee_against=["x"],
        pld_grid=grid, rdp_orders=orders)


def _coarse_grid(eps_rdp: float) -> float:
    """A PLD grid about 1/200 of the epsilon (RDP estimate), within [1e-4, 5e-2]: fast."""
    return min(COARSE_GRID, max(accounting.PLD_DISCRETIZATION, 5e-3 * eps_rdp))


def test_claim_matches_independent_pld_and_is_below_rdp_on_a_grid():
    """Every setting at a coarse PLD grid (fast); the grid is recorded in the Claim."""
    settings = list(itertools.product(RATES, NOISES, STEPS))
    assert len(settings) >= 100
    largest, checked = 0.0, 0
    for i, (q, z, steps) in enumerate(settings):
        delta = 1e-10 if i % 2 else 1e-5
        eps_rdp = _independent_rdp(q, z, steps, delta, ORDERS)
        grid = _coarse_grid(eps_rdp)
        claim = _claim(q, z, steps, delta, grid, ORDERS)
        assert claim.accountant == "pld" and claim.pld_grid == grid
        eps_pld = _independent_pld(q, z, steps, delta, grid)
        assert math.isclose(claim.epsilon, eps_pld, rel_tol=1e-6), (q, z, steps, delta)
        assert claim.epsilon <= eps_rdp * (1 + 1e-9), (q, z, steps, delta)
        assert math.isclose(claim.epsilon_rdp, eps_rdp, rel_tol=1e-9)
        if claim.pld_grid != accounting.PLD_DISCRETIZATION:
            assert any("grid" in n for n in claim.notes)  # a coarser grid is always named
        largest = max(largest, claim.epsilon if math.isfinite(claim.epsilon) else 0.0)
        checked += 1
    assert checked == len(settings)
    assert largest >= 100  # the grid reaches epsilon 100 and beyond without crashing


@pytest.mark.parametrize(("q", "z", "steps", "delta"), DEFAULT_POLICY)
def test_claim_at_the_default_grid_matches_independent_pld(q, z, steps, delta):
    claim = _claim(q, z, steps, delta, None)
    assert claim.pld_grid == accounting.pld_grid_for(claim.epsilon_rdp)
    eps_pld = _independent_pld(q, z, steps, delta, claim.pld_grid)
    eps_rdp = _independent_rdp(q, z, steps, delta)
    assert math.isclose(claim.epsilon, eps_pld, rel_tol=1e-6)
    assert math.isclose(claim.epsilon_rdp, eps_rdp, rel_tol=1e-9)
    assert claim.epsilon <= eps_rdp


def test_fixed_cohort_gets_its_own_event_and_an_rdp_claim_never_a_poisson_one():
    event = accounting.compose_steps(
        [accounting.sampled_gaussian_event(1.5, "fixed_cohort", population=100, sample_size=10)]
        * 20)
    assert "SampledWithoutReplacement" in repr(event)
    claim = claim_from_event(event, delta=1e-5, target_epsilon=8.0, unit="client",
                             neighbouring="replace_one", sampling="fixed_cohort",
                             noise_multiplier=1.5, sampling_rate=0.1, steps=20, clip=1.0,
                             guarantee_against=["x"])
    assert claim.accountant == "rdp" and claim.sampling == "fixed_cohort"
    assert any("RDP" in n for n in claim.notes)
    # dp_accounting's RDP reads noise relative to the replace-one sensitivity 2C: z / 2
    want = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
                             ).compose(dp_accounting.SelfComposedDpEvent(
                                 dp_accounting.SampledWithoutReplacementDpEvent(
                                     100, 10, dp_accounting.GaussianDpEvent(0.75)), 20)
                             ).get_epsilon(1e-5)
    assert math.isclose(claim.epsilon, want, rel_tol=1e-9)


def test_shuffled_batches_are_refused_not_given_a_poisson_epsilon():
    with pytest.raises(accounting.AccountingRefused, match="shuffle"):
        accounting.sampled_gaussian_event(1.0, "shuffle", 0.1)


def test_schedule_calibration_meets_the_target_as_a_composition_of_gaussians():
    plan = accounting.Plan(steps=12, sampling="poisson", sampling_rate=0.2, scales=(3.0, 1.0))
    z = accounting.calibrate_plan(4.0, 1e-5, plan)
    event = plan.event(z)
    assert isinstance(event, dp_accounting.ComposedDpEvent) and len(event.events) == 2
    eps = accounting.pld_epsilon(event, 1e-5)
    assert eps <= 4.0 and eps == pytest.approx(4.0, rel=0.01)


@pytest.mark.parametrize("target", [0.5, 1.0, 4.0, 8.0])
def test_replace_one_poisson_claims_the_target_on_the_fine_grid(target):
    """dp_accounting's RDP gives inf for replace-one with Poisson sampling; the Claim's PLD grid
    comes from a finite estimate, so the claim meets the calibration target, not a coarse grid's
    overstatement, and carries no "large epsilon" note."""
    from privbench.privacy.ledger import PrivacyLedger
    from privbench.spec.schema import PrivacySpec, TrainSpec
    from privbench.trainers.privacy_plan import make_plan

    train = TrainSpec(rounds=10, cohort=10)
    plan = make_plan(train, PrivacySpec(epsilon=target, neighbouring="replace_one"), 100, 10.0)
    ledger = PrivacyLedger(None, 1e-5, "replace_one")
    for r in range(train.rounds):
        ledger.record_round(r + 1, plan.run_event(r, 10), list(range(10)), None)
    claim = plan.claim(ledger, train.rounds, 1.0)
    assert math.isinf(claim.epsilon_rdp)  # the pitfall: RDP cannot bound this event
    assert claim.accountant == "pld" and claim.pld_grid == accounting.PLD_DISCRETIZATION
    assert target - 1e-3 <= claim.epsilon <= target
    assert not any("large epsilon" in n or "grid" in n for n in claim.notes), claim.notes


@pytest.mark.parametrize("neighbouring", ["add_or_remove_one", "replace_one"])
def test_the_incremental_composer_is_dp_accountings_pld_accountant_to_the_bit(neighbouring):
    """Round by round, PLDComposer (cached PLDs, numpy tail truncation, a cached spectrum) holds
    the accountant's epsilon exactly; its numpy reading is within 1e-15."""
    events = [accounting.sampled_gaussian_event(1.2, "poisson", 0.2)] * 5 + [
        accounting.sampled_gaussian_event(0.9, "poisson", 0.2),
        dp_accounting.GaussianDpEvent(4.0),
        accounting.compose_steps([accounting.sampled_gaussian_event(2.0, "poisson", 0.05)] * 3)]
    composer = accounting.PLDComposer(neighbouring, 3e-3)
    for r, event in enumerate(events):
        composer.compose(event)
        acc = pld.PLDAccountant(accounting.NEIGHBOURING[neighbouring], 3e-3)
        want = acc.compose(dp_accounting.ComposedDpEvent(events[:r + 1])).get_epsilon(1e-6)
        assert composer.epsilon(1e-6) == want
        assert composer.epsilon(1e-6, vectorised=True) == pytest.approx(want, rel=1e-15)
