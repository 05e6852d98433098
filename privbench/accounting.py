"""Privacy accounting with dp_accounting: events, PLD and RDP epsilons, and noise calibration.

The executed `DpEvent` is the one source of truth: the Claim, the card and the report read
the epsilon computed here from the event that actually ran.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import attr
import dp_accounting
from dp_accounting import pld, rdp

# dp_accounting's RDP code logs a warning for every order it drops; they are expected and noisy.
logging.getLogger("absl").setLevel(logging.ERROR)

NEIGHBOURING = {
    "add_or_remove_one": dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
    "replace_one": dp_accounting.NeighboringRelation.REPLACE_ONE,
}
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
    acc = pld.PLDAccountant(NEIGHBOURING[neighbouring],
                            value_discretization_interval=PLD_DISCRETIZATION)
    return float(acc.compose(event).get_epsilon(delta))


def rdp_epsilon(event: dp_accounting.DpEvent, delta: float,
                neighbouring: str = "add_or_remove_one") -> float:
    """Epsilon at `delta` from the Renyi-DP accountant (an upper bound, looser than PLD)."""
    if _is_nonprivate(event):
        return math.inf
    acc = rdp.RdpAccountant(neighboring_relation=NEIGHBOURING[neighbouring])
    return float(acc.compose(event).get_epsilon(delta))


@functools.lru_cache(maxsize=256)
def calibrate_noise_multiplier(target_epsilon: float, delta: float, sampling_rate: float,
                               steps: int, neighbouring: str = "add_or_remove_one") -> float:
    """The smallest noise multiplier whose PLD epsilon over the plan meets `target_epsilon`."""
    if math.isinf(target_epsilon):
        return 0.0

    def make_accountant() -> pld.PLDAccountant:
        return pld.PLDAccountant(NEIGHBOURING[neighbouring],
                                 value_discretization_interval=CALIBRATION_DISCRETIZATION)

    z = dp_accounting.calibrate_dp_mechanism(
        make_accountant,
        lambda z: poisson_gaussian_event(z, sampling_rate, steps),
        target_epsilon,
        delta,
        tol=1e-4,
    )
    return float(z)


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
