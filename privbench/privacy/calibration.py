"""Noise calibration: the smallest noise multiplier whose epsilon over a run's plan meets the
target. A Poisson-sampled Gaussian with constant noise searches with the PLD composer
(privacy/pld_compose.py) on a coarser pessimistic grid (so the noise it picks never falls short of
the target) and refines where the 1e-4 step would leave the claim more than CALIBRATION_SLACK below
the target; other plans search with dp_accounting's PLD accountant, or RDP where PLD does not
support the events. Each search is a pure function of its arguments, remembered in
privacy/accounting_cache.py."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import dp_accounting
from dp_accounting import pld, rdp

from privbench.privacy import accounting_cache
from privbench.privacy.dp_events import (
    Plan,
    poisson_gaussian_event,
    rdp_convention,
)
from privbench.privacy.pld_compose import NEIGHBOURING, PLDComposer

# Calibration searches with a coarser (still pessimistic) PLD grid: ten times faster, and since a
# coarser pessimistic PLD over-estimates epsilon, the noise it picks never falls short of the
# target.
CALIBRATION_DISCRETIZATION = 1e-3


@functools.lru_cache(maxsize=256)
def calibrate_noise_multiplier(target_epsilon: float, delta: float, sampling_rate: float,
                               steps: int, neighbouring: str = "add_or_remove_one") -> float:
    """The smallest noise multiplier whose PLD epsilon over the plan meets `target_epsilon`."""
    if math.isinf(target_epsilon):
        return 0.0

    def make_accountant() -> _ComposerAccountant:
        return _ComposerAccountant(neighbouring, CALIBRATION_DISCRETIZATION)

    return accounting_cache.memo(  # a pure function of its arguments: searched once
        "calibration", ["poisson_gaussian", target_epsilon, delta, sampling_rate, steps,
                        neighbouring, CALIBRATION_DISCRETIZATION, CALIBRATION_SLACK],
        lambda: _calibrate(make_accountant,
                           lambda z: poisson_gaussian_event(z, sampling_rate, steps),
                           target_epsilon, delta))


class _ComposerAccountant:
    """What `dp_accounting.calibrate_dp_mechanism` asks of a fresh PLD accountant (`ledger`,
    `compose`, `get_epsilon`), answered by `PLDComposer`: the same epsilon as
    `pld.PLDAccountant` at the same grid, to the last bit (so the same noise multiplier is
    found), at a fraction of the cost; each (event, delta) is evaluated once per process, as the
    search and its checks ask for the same points more than once."""

    ledger = dp_accounting.NoOpDpEvent()

    def __init__(self, neighbouring: str, grid: float) -> None:
        self.neighbouring, self.grid = neighbouring, grid
        self._event: dp_accounting.DpEvent = dp_accounting.NoOpDpEvent()

    def compose(self, event: dp_accounting.DpEvent) -> _ComposerAccountant:
        self._event = event
        return self

    def get_epsilon(self, delta: float) -> float:
        return _composer_epsilon(self._event, delta, self.neighbouring, self.grid)


@functools.lru_cache(maxsize=1024)
def _composer_epsilon(event: dp_accounting.DpEvent, delta: float, neighbouring: str,
                      grid: float) -> float:
    return PLDComposer(neighbouring, grid).compose(event).epsilon(delta)


# Calibration of a Poisson-sampled Gaussian searches the noise multiplier to 1e-4; where that
# step leaves epsilon more than this far below the target (small noise multipliers, large
# epsilon), it searches on to 1e-6, so that the Claim (on the finer 1e-4 grid, lower by about
# 1e-5) is within 1e-3 of the target. Plans with schedules keep the 1e-4 search.
CALIBRATION_SLACK = 9e-4


def _calibrate(make_accountant: Any, make_event: Any, target_epsilon: float,
               delta: float) -> float:
    """The smallest noise multiplier (to 1e-4) whose epsilon meets the target; refined to 1e-6
    where the 1e-4 step leaves the epsilon more than `CALIBRATION_SLACK` below the target, so a
    claim is within 1e-3 of what was asked, never above it (where the step is finer than that,
    the noise is what the 1e-4 search gives, as before)."""
    z = float(dp_accounting.calibrate_dp_mechanism(make_accountant, make_event, target_epsilon,
                                                   delta, tol=1e-4))

    def eps(x: float) -> float:
        return float(make_accountant().compose(make_event(x)).get_epsilon(delta))

    if target_epsilon - eps(z) <= CALIBRATION_SLACK or z <= 1e-4:
        return z
    try:
        finer = dp_accounting.calibrate_dp_mechanism(
            make_accountant, make_event, target_epsilon, delta,
            bracket_interval=dp_accounting.ExplicitBracketInterval(z - 1e-4, z), tol=1e-6)
    except ValueError:  # the optimum was not inside the last step after all: keep z
        return z
    return float(finer) if eps(float(finer)) <= target_epsilon else z


# Renyi orders for calibrating with RDP: fewer than dp_accounting's default (its sampling-
# without-replacement bound is slow at many orders); the bound is looser, so the noise chosen
# is, if anything, larger than needed, and the Claim is then accounted with all the orders.
CALIBRATION_RDP_ORDERS = (1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0,
                          16.0, 20.0, 24.0, 32.0, 48.0, 64.0, 128.0, 256.0)


@functools.lru_cache(maxsize=256)
def calibrate_plan(target_epsilon: float, delta: float, plan: Plan,
                   neighbouring: str = "add_or_remove_one") -> float:
    """The smallest base noise multiplier whose epsilon over the whole `plan` meets the target.

    PLD when the plan's events support it, else RDP; both are upper bounds at the grid used.
    """
    if math.isinf(target_epsilon):
        return 0.0
    if plan.sampling == "poisson" and not plan.scales:
        return calibrate_noise_multiplier(target_epsilon, delta, plan.sampling_rate, plan.steps,
                                          neighbouring)
    use_pld = pld.PLDAccountant(NEIGHBOURING[neighbouring]).supports(plan.event(1.0))

    def make_accountant() -> Any:
        if use_pld:
            return pld.PLDAccountant(NEIGHBOURING[neighbouring],
                                     value_discretization_interval=CALIBRATION_DISCRETIZATION)
        return rdp.RdpAccountant(orders=list(CALIBRATION_RDP_ORDERS),
                                 neighboring_relation=NEIGHBOURING[neighbouring])

    def make_event(z: float) -> dp_accounting.DpEvent:
        return plan.event(z) if use_pld else rdp_convention(plan.event(z), neighbouring)

    return accounting_cache.memo(  # a pure function of its arguments: searched once
        "calibration", ["plan", target_epsilon, delta, dataclasses.asdict(plan), neighbouring,
                        CALIBRATION_DISCRETIZATION, list(CALIBRATION_RDP_ORDERS)],
        lambda: float(dp_accounting.calibrate_dp_mechanism(make_accountant, make_event,
                                                           target_epsilon, delta, tol=1e-4)))


accounting_cache.forgotten_with_memory(calibrate_plan, calibrate_noise_multiplier,
                                       _composer_epsilon)
