"""Privacy accounting with dp_accounting: the one entry point for epsilons, events and calibration.

The executed `DpEvent` (privacy/dp_events.py) is the one source of truth: the Claim, the card and
the report read the epsilon computed here from the event that actually ran: PLD (tight) where it
can, a coarser pessimistic PLD grid or RDP otherwise, each fallback an upper bound named in the
notes. Noise calibration (privacy/calibration.py) and the event constructors are re-exported
here. Every epsilon is a pure function of its arguments, remembered in privacy/accounting_cache.py.
"""

from __future__ import annotations

import logging
import math

import dp_accounting
from dp_accounting import privacy_accountant, rdp

from privbench.privacy import accounting_cache

# The one entry point: events (privacy/dp_events.py) and calibration (privacy/calibration.py)
# are re-exported, so callers read `accounting.<name>` whatever module computes it.
from privbench.privacy.calibration import (
    CALIBRATION_DISCRETIZATION as CALIBRATION_DISCRETIZATION,
)
from privbench.privacy.calibration import (
    CALIBRATION_SLACK as CALIBRATION_SLACK,
)
from privbench.privacy.calibration import (
    calibrate_noise_multiplier as calibrate_noise_multiplier,
)
from privbench.privacy.calibration import (
    calibrate_plan as calibrate_plan,
)
from privbench.privacy.dp_events import (
    SAMPLINGS as SAMPLINGS,
)
from privbench.privacy.dp_events import (
    AccountingRefused as AccountingRefused,
)
from privbench.privacy.dp_events import (
    Plan as Plan,
)
from privbench.privacy.dp_events import (
    _is_nonprivate,
)
from privbench.privacy.dp_events import (
    compose_steps as compose_steps,
)
from privbench.privacy.dp_events import (
    event_from_dict as event_from_dict,
)
from privbench.privacy.dp_events import (
    event_to_dict as event_to_dict,
)
from privbench.privacy.dp_events import (
    poisson_gaussian_event as poisson_gaussian_event,
)
from privbench.privacy.dp_events import (
    rdp_convention as rdp_convention,
)
from privbench.privacy.dp_events import (
    sampled_gaussian_event as sampled_gaussian_event,
)
from privbench.privacy.pld_compose import NEIGHBOURING, PLDComposer

# dp_accounting's RDP code logs a warning for every order it drops; they are expected and noisy.
logging.getLogger("absl").setLevel(logging.ERROR)

PLD_DISCRETIZATION = 1e-4


def pld_epsilon(event: dp_accounting.DpEvent, delta: float,
                neighbouring: str = "add_or_remove_one") -> float:
    """Epsilon at `delta` from the privacy-loss-distribution accountant (tight).

    Args:
        event: the executed DpEvent; delta: the target delta;
        neighbouring: "add_or_remove_one" or "replace_one".
    Returns:
        Epsilon (inf for a non-private event), memoised in the accounting cache.
    """
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

    Args:
        event: the executed DpEvent; delta: the target delta;
        neighbouring: "add_or_remove_one" or "replace_one";
        orders: the Renyi orders (None: dp_accounting's).
    Returns:
        Epsilon (inf for a non-private event).
    """
    if _is_nonprivate(event):
        return math.inf

    def compute() -> float:
        acc = rdp.RdpAccountant(orders=list(orders) if orders else None,
                                neighboring_relation=NEIGHBOURING[neighbouring])
        return float(acc.compose(rdp_convention(event, neighbouring)).get_epsilon(delta))

    return accounting_cache.memo("rdp_epsilon", [event_to_dict(event), delta, neighbouring,
                                                 list(orders) if orders else None], compute)


# PLD grids tried in turn before falling back to RDP: a coarser pessimistic grid still gives an
# upper bound on epsilon, only a looser one.
PLD_FALLBACK_GRIDS = (PLD_DISCRETIZATION, 1e-2, 1e-1)


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
    epsilon and is named in the notes. Without `grid`, the grid is `pld_grid_for` of an RDP
    estimate of epsilon (`rdp_estimate` when the caller has it already).

    Args:
        event: the executed DpEvent; delta: the target delta;
        neighbouring: "add_or_remove_one" or "replace_one";
        grid: the PLD discretisation (None: chosen from the RDP estimate);
        rdp_estimate: the RDP epsilon when already computed.
    Returns:
        (epsilon, "pld" or "rdp", the PLD grid used or None, notes on each fallback).
    Raises:
        AccountingRefused: neither PLD nor RDP can bound the event.
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
    """The RDP epsilon, or inf where the RDP accountant does not support the event.

    Args:
        event: the executed DpEvent; delta: the target delta;
        neighbouring: "add_or_remove_one" or "replace_one";
        orders: the Renyi orders (None: dp_accounting's).
    """
    try:
        return rdp_epsilon(event, delta, neighbouring, orders)
    except (ValueError, OverflowError, privacy_accountant.UnsupportedEventError):
        return math.inf

