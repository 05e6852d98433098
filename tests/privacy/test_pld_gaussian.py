"""The Gaussian PLD built with numpy (privbench.privacy.pld_gaussian) and its self-composition
(privbench.privacy.pld_compose.self_compose_pld) are dp_accounting's, bit for bit, and
calibration through them finds the noise multiplier dp_accounting's own PLD accountant finds."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld
from dp_accounting.pld import privacy_loss_distribution as pld_lib

from privbench.privacy import accounting, calibration
from privbench.privacy.pld_compose import NEIGHBOURING, self_compose_pld
from privbench.privacy.pld_gaussian import gaussian_pld


def _same_pmf(a, b) -> None:
    assert type(a) is type(b)
    assert a._infinity_mass == b._infinity_mass
    if isinstance(a, dp_accounting.pld.pld_pmf.DensePLDPmf):
        assert a._lower_loss == b._lower_loss
        assert a._probs.dtype == b._probs.dtype and np.array_equal(a._probs, b._probs)
    else:
        assert a._loss_probs == b._loss_probs


@pytest.mark.parametrize(("std", "q", "relation", "grid", "pessimistic"), [
    (0.6807127582560548, 0.1, "add_or_remove_one", 1e-3, True),  # the Flower benchmark's plan
    (1.1, 0.01, "add_or_remove_one", 3e-3, True),
    (2.5, 0.9, "add_or_remove_one", 1e-2, True),
    (0.8, None, "add_or_remove_one", 1e-3, True),  # no sampling
    (1.3, 0.2, "replace_one", 1e-2, True),  # REPLACE: the library's own loop
    # optimistic (privacy buckets): the audit family's epsilons at its 1e-3 grid
    (0.9, 0.25, "add_or_remove_one", 1e-3, False),
    (0.35, 0.07, "add_or_remove_one", 1e-3, False),  # a scaled-down noise: a long tail
    (4.0, 0.01, "add_or_remove_one", 1e-2, False),
    (0.8, None, "add_or_remove_one", 1e-3, False),  # no sampling
    (1.3, 0.2, "replace_one", 1e-2, False),  # REPLACE: the library's own loop
])
def test_the_pld_is_dp_accountings_bit_for_bit(std, q, relation, grid, pessimistic):
    kwargs = {} if q is None else {"sampling_prob": q}
    want = pld_lib.from_gaussian_mechanism(standard_deviation=std,
                                           value_discretization_interval=grid,
                                           neighboring_relation=NEIGHBOURING[relation],
                                           pessimistic_estimate=pessimistic,
                                           use_connect_dots=pessimistic, **kwargs)
    got = gaussian_pld(std, q, NEIGHBOURING[relation], grid, pessimistic=pessimistic)
    _same_pmf(got._pmf_remove, want._pmf_remove)
    _same_pmf(got._pmf_add, want._pmf_add)
    assert got.get_epsilon_for_delta(1e-5) == want.get_epsilon_for_delta(1e-5)


@pytest.mark.parametrize(("std", "q", "count", "pessimistic", "grid"), [
    (1.2, 1 / 3, 32, True, 4e-3),  # the f-DP audit family's design tables (dense)
    (3.0, 0.05, 400, True, 1e-3),  # wide: the bounds in several blocks
    (10.0, 0.002, 2, True, 1e-3),  # a sparse PMF, self-composed as a sparse one
    (10.0, 0.002, 40, True, 1e-3),  # a sparse PMF that turns dense
    (0.8, None, 7, False, 1e-3),  # optimistic, no sampling (the family's epsilon)
    (1.5, 0.2, 1, False, 1e-3),  # one composition: truncation only
])
def test_self_composition_is_dp_accountings_bit_for_bit(std, q, count, pessimistic, grid):
    kwargs = {} if q is None else {"sampling_prob": q}
    one = pld_lib.from_gaussian_mechanism(standard_deviation=std, pessimistic_estimate=pessimistic,
                                          value_discretization_interval=grid,
                                          use_connect_dots=pessimistic, **kwargs)
    want, got = one.self_compose(count), self_compose_pld(one, count)
    _same_pmf(got._pmf_remove, want._pmf_remove)
    _same_pmf(got._pmf_add, want._pmf_add)
    assert got.get_epsilon_for_delta(1e-5) == want.get_epsilon_for_delta(1e-5)


def test_calibration_finds_the_noise_dp_accountings_accountant_finds():
    target, delta, q, steps = 3.0, 1e-5, 0.05, 12
    accounting.calibrate_noise_multiplier.cache_clear()
    got = accounting.calibrate_noise_multiplier(target, delta, q, steps)

    def make_accountant() -> pld.PLDAccountant:
        grid = accounting.CALIBRATION_DISCRETIZATION
        return pld.PLDAccountant(value_discretization_interval=grid)

    want = calibration._calibrate(make_accountant,
                                  lambda z: accounting.poisson_gaussian_event(z, q, steps),
                                  target, delta)
    assert got == want
