"""Privacy accounting with dp_accounting: events, PLD and RDP epsilons, and noise calibration.

The executed `DpEvent` is the one source of truth: the Claim, the card and the report read
the epsilon computed here from the event that actually ran.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import attr
import dp_accounting
from dp_accounting import pld, privacy_accountant, rdp

from privbench.privacy import accounting_cache
from privbench.privacy.pld_compose import NEIGHBOURING, PLDComposer

# dp_accounting's RDP code logs a warning for every order it drops; they are expected and noisy.
logging.getLogger("absl").setLevel(logging.ERROR)

PLD_DISCRETIZATION = 1e-4
# Calibration searches with a coarser (still pessimistic) PLD grid: ten times faster, and since a
# coarser pessimistic PLD over-estimates epsilon, the noise it picks never falls short of the
# target.
CALIBRATION_DISCRETIZATION = 1e-3


def poisson_gaussian_event(noise_multiplier: float, sampling_rate: float,
                           steps: int) -> dp_accounting.DpEvent:
    """`steps` compositions of a Poisson-subsampled Gaussian mechanism (DP-SGD, DP-FedAvg)."""
    if steps == 0:
        return dp_accounting.NoOpDpEvent()
    if noise_multiplier <= 0:
        return dp_accounting.NonPrivateDpEvent()
    inner: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1.0:
        inner = dp_accounting.PoissonSampledDpEvent(sampling_rate, inner)
    return dp_accounting.SelfComposedDpEvent(inner, steps)


def pld_epsilon(event: dp_accounting.DpEvent, delta: float,
                neighbouring: str = "add_or_remove_one") -> float:
    """Epsilon at `delta` from the privacy-loss-distribution accountant (tight)."""
    if _is_nonprivate(event):
        return math.inf
    return accounting_cache.memo(  # a pure function of its arguments: computed once
        "pld_epsilon", [event_to_dict(event), delta, neighbouring, PLD_DISCRETIZATION],
        lambda: PLDComposer(neighbouring, PLD_DISCRETIZATION).compose(event).epsilon(delta))


def rdp_epsilon(event: dp_accounting.DpEvent, delta: float,
                neighbouring: str = "add_or_remove_one",
                orders: tuple[float, ...] | None = None) -> float:
    """Epsilon at `delta` from the Renyi-DP accountant (an upper bound, looser than PLD).

    `orders` narrows the Renyi orders searched (faster, a looser but still valid bound).
    """
    if _is_nonprivate(event):
        return math.inf

    def compute() -> float:
        acc = rdp.RdpAccountant(orders=list(orders) if orders else None,
                                neighboring_relation=NEIGHBOURING[neighbouring])
        return float(acc.compose(rdp_convention(event, neighbouring)).get_epsilon(delta))

    return accounting_cache.memo("rdp_epsilon", [event_to_dict(event), delta, neighbouring,
                                                 list(orders) if orders else None], compute)


def rdp_convention(event: dp_accounting.DpEvent, neighbouring: str) -> dp_accounting.DpEvent:
    """The event as dp_accounting's RDP accountant reads it.

    Our events carry noise relative to the bound C on one record's contribution, as the PLD
    accountant reads them under both relations (for replace-one it shifts the means by +-C
    itself). The RDP accountant instead takes noise relative to the l2 sensitivity of the
    relation, 2C under replace-one: there every Gaussian's multiplier is halved.
    """
    if neighbouring != "replace_one":
        return event
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return dp_accounting.GaussianDpEvent(event.noise_multiplier / 2)
    if isinstance(event, dp_accounting.PoissonSampledDpEvent):
        return dp_accounting.PoissonSampledDpEvent(
            event.sampling_probability, rdp_convention(event.event, neighbouring))
    if isinstance(event, dp_accounting.SampledWithoutReplacementDpEvent):
        return dp_accounting.SampledWithoutReplacementDpEvent(
            event.source_dataset_size, event.sample_size,
            rdp_convention(event.event, neighbouring))
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return dp_accounting.SelfComposedDpEvent(rdp_convention(event.event, neighbouring),
                                                 event.count)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return dp_accounting.ComposedDpEvent([rdp_convention(e, neighbouring)
                                              for e in event.events])
    return event


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


SAMPLINGS = ("poisson", "fixed_cohort", "none")
# Renyi orders for calibrating with RDP: fewer than dp_accounting's default (its sampling-
# without-replacement bound is slow at many orders); the bound is looser, so the noise chosen
# is, if anything, larger than needed, and the Claim is then accounted with all the orders.
CALIBRATION_RDP_ORDERS = (1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0,
                          16.0, 20.0, 24.0, 32.0, 48.0, 64.0, 128.0, 256.0)
# PLD grids tried in turn before falling back to RDP: a coarser pessimistic grid still gives an
# upper bound on epsilon, only a looser one.
PLD_FALLBACK_GRIDS = (PLD_DISCRETIZATION, 1e-2, 1e-1)


class AccountingRefused(ValueError):
    """A sampling scheme or event that no accountant here can bound honestly."""


@dataclass(frozen=True)
class Plan:
    """What a run will execute, for calibration: steps of one sampled Gaussian mechanism each.

    `scales` splits the steps into equal spans whose noise is the base multiplier times the
    factor (a budget-aware noise schedule); empty means constant noise.
    """

    steps: int
    sampling: str = "poisson"
    sampling_rate: float = 1.0
    population: int = 0
    sample_size: int = 0
    scales: tuple[float, ...] = ()

    def multipliers(self, z: float) -> list[float]:
        """The noise multiplier of each step for base multiplier `z`."""
        if not self.scales:
            return [z] * self.steps
        spans = len(self.scales)
        return [z * self.scales[min(spans - 1, t * spans // self.steps)]
                for t in range(self.steps)]

    def step_event(self, z: float, sample_size: int | None = None) -> dp_accounting.DpEvent:
        """One step's event; `sample_size` is the realised fixed cohort when it differs."""
        return sampled_gaussian_event(z, self.sampling, self.sampling_rate, self.population,
                                      self.sample_size if sample_size is None else sample_size)

    def event(self, z: float) -> dp_accounting.DpEvent:
        return compose_steps([self.step_event(m) for m in self.multipliers(z)])


def sampled_gaussian_event(noise_multiplier: float, sampling: str, sampling_rate: float = 1.0,
                           population: int = 0, sample_size: int = 0) -> dp_accounting.DpEvent:
    """One Gaussian release on a sampled cohort: Poisson, fixed size without replacement, or all.

    Shuffled batches are refused: reporting their Poisson epsilon would overstate privacy.
    """
    if noise_multiplier <= 0:
        return dp_accounting.NonPrivateDpEvent()
    if sampling not in SAMPLINGS:
        raise AccountingRefused(f"sampling {sampling!r} has no honest accountant here; use one of "
                                f"{', '.join(SAMPLINGS)}")
    inner: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling == "poisson" and sampling_rate < 1.0:
        return dp_accounting.PoissonSampledDpEvent(sampling_rate, inner)
    if sampling == "fixed_cohort" and sample_size < population:
        return dp_accounting.SampledWithoutReplacementDpEvent(population, sample_size, inner)
    return inner


def compose_steps(events: list[dp_accounting.DpEvent]) -> dp_accounting.DpEvent:
    """Compose per-step events, folding runs of equal events into SelfComposedDpEvent."""
    runs: list[list[Any]] = []
    for e in events:
        if runs and runs[-1][0] == e:
            runs[-1][1] += 1
        else:
            runs.append([e, 1])
    parts = [e if n == 1 else dp_accounting.SelfComposedDpEvent(e, n) for e, n in runs]
    if not parts:
        return dp_accounting.NoOpDpEvent()
    if len(parts) == 1:
        return parts[0]
    return dp_accounting.ComposedDpEvent(parts)


def pld_grid_for(epsilon_estimate: float) -> float:
    """The PLD grid for a claim: 1e-4 up to epsilon 10, coarser above, where a fine grid costs
    seconds to minutes and a coarse pessimistic one is still an upper bound within ~1e-5."""
    if epsilon_estimate <= 10:
        return PLD_DISCRETIZATION
    return 1e-3 if epsilon_estimate <= 50 else 1e-2


def epsilon_with_fallback(event: dp_accounting.DpEvent, delta: float,
                          neighbouring: str = "add_or_remove_one", grid: float | None = None,
                          rdp_estimate: float | None = None,
                          ) -> tuple[float, str, float | None, list[str]]:
    """(epsilon, accountant, PLD grid, notes): PLD if it can, coarser PLD or RDP otherwise.

    Never a crash for a supported event: every fallback is an upper bound on the exact
    epsilon and is named in the notes. Without `grid`, `pld_grid_for` the RDP estimate is used
    (`rdp_estimate` when the caller has it already).
    """
    if _is_nonprivate(event):
        return math.inf, "pld", None, []
    eps, accountant, used, notes = accounting_cache.memo(  # a pure function: computed once
        "epsilon_with_fallback", [event_to_dict(event), delta, neighbouring, grid, rdp_estimate,
                                  list(PLD_FALLBACK_GRIDS)],
        lambda: _epsilon_with_fallback(event, delta, neighbouring, grid, rdp_estimate))
    return eps, accountant, used, list(notes)


def _epsilon_with_fallback(event: dp_accounting.DpEvent, delta: float, neighbouring: str,
                           grid: float | None, rdp_estimate: float | None,
                           ) -> tuple[float, str, float | None, list[str]]:
    notes: list[str] = []
    pld_supports = PLDComposer.supports(event, neighbouring)
    if not pld_supports:
        notes.append(f"the PLD accountant does not support this event under {neighbouring}")
    if grid is None:
        estimate = (rdp_estimate if rdp_estimate is not None
                    else rdp_epsilon_or_inf(event, delta, neighbouring))
        if not math.isfinite(estimate) and pld_supports:
            # RDP cannot bound it (replace-one with Poisson sampling): never choose the grid
            # from that inf, but from a coarse pessimistic PLD, itself an upper bound
            estimate = _coarse_pld_estimate(event, delta, neighbouring)
        grid = pld_grid_for(estimate)
        if grid != PLD_DISCRETIZATION:
            why = "large epsilon" if math.isfinite(estimate) else "no finite estimate of epsilon"
            notes.append(f"{why}: PLD on a {grid:g} grid (pessimistic, an upper bound)")
    tries = sorted({grid, *(g for g in PLD_FALLBACK_GRIDS if g > grid)}) if pld_supports else []
    for grid in tries:
        try:
            eps = PLDComposer(neighbouring, grid).compose(event).epsilon(delta)
        except (ValueError, OverflowError, MemoryError, FloatingPointError) as e:
            notes.append(f"PLD (grid {grid:g}) failed: {type(e).__name__}: {str(e)[:120]}")
            continue
        if not math.isnan(eps):
            return eps, "pld", grid, notes
    try:
        eps = rdp_epsilon(event, delta, neighbouring)
    except (ValueError, OverflowError, privacy_accountant.UnsupportedEventError) as e:
        raise AccountingRefused(f"no accountant can bound this event: {e}") from e
    notes.append("epsilon from the RDP accountant (an upper bound; PLD could not be used)")
    return eps, "rdp", None, notes


def _coarse_pld_estimate(event: dp_accounting.DpEvent, delta: float, neighbouring: str) -> float:
    """A fast upper bound on epsilon (PLD on the coarsest fallback grid), or inf if it fails."""
    try:
        return PLDComposer(neighbouring, PLD_FALLBACK_GRIDS[1]).compose(event).epsilon(delta)
    except (ValueError, OverflowError, MemoryError, FloatingPointError):
        return math.inf


def rdp_epsilon_or_inf(event: dp_accounting.DpEvent, delta: float,
                       neighbouring: str = "add_or_remove_one",
                       orders: tuple[float, ...] | None = None) -> float:
    """The RDP epsilon, or inf where the RDP accountant does not support the event."""
    try:
        return rdp_epsilon(event, delta, neighbouring, orders)
    except (ValueError, OverflowError, privacy_accountant.UnsupportedEventError):
        return math.inf


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


def event_to_dict(event: dp_accounting.DpEvent) -> dict[str, Any]:
    """A JSON-ready, nested description of a DpEvent: {"type": ClassName, field: value, ...}."""
    out: dict[str, Any] = {"type": type(event).__name__}
    for f in attr.fields(type(event)):
        out[f.name] = _encode(getattr(event, f.name))
    return out


def event_from_dict(data: dict[str, Any]) -> dp_accounting.DpEvent:
    """Rebuild the DpEvent written by `event_to_dict`."""
    cls = getattr(dp_accounting.dp_event, data["type"])
    kwargs = {k: _decode(v) for k, v in data.items() if k != "type"}
    return cls(**kwargs)


def _encode(value: Any) -> Any:
    if isinstance(value, dp_accounting.DpEvent):
        return event_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "type" in value:
        return event_from_dict(value)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _is_nonprivate(event: dp_accounting.DpEvent) -> bool:
    return isinstance(event, dp_accounting.NonPrivateDpEvent)


accounting_cache.forgotten_with_memory(calibrate_plan, calibrate_noise_multiplier,
                                       _composer_epsilon)
