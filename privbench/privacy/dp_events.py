"""The DP events a run executes, and their JSON form.

The executed DpEvent (dp_accounting's) is the one source of truth: the ledger records one per
round, the Claim, the card and the report read the epsilon computed from the event that actually
ran (privacy/accounting.py). A new mechanism is a new constructor here returning dp_accounting
events, not a flag: a Poisson-subsampled Gaussian (DP-SGD, DP-FedAvg), a fixed cohort sampled
without replacement, or every record; shuffled batches are refused (AccountingRefused), since their
Poisson epsilon would overstate privacy. `Plan` is what a run will execute, for calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import attr
import dp_accounting


def poisson_gaussian_event(noise_multiplier: float, sampling_rate: float,
                           steps: int) -> dp_accounting.DpEvent:
    """`steps` compositions of a Poisson-subsampled Gaussian mechanism (DP-SGD, DP-FedAvg).

    Args:
        noise_multiplier: z (0 or below: non-private); sampling_rate: q (1: no sampling);
        steps: the rounds or steps (0: a NoOp event).
    """
    if steps == 0:
        return dp_accounting.NoOpDpEvent()
    if noise_multiplier <= 0:
        return dp_accounting.NonPrivateDpEvent()
    inner: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1.0:
        inner = dp_accounting.PoissonSampledDpEvent(sampling_rate, inner)
    return dp_accounting.SelfComposedDpEvent(inner, steps)


def rdp_convention(event: dp_accounting.DpEvent, neighbouring: str) -> dp_accounting.DpEvent:
    """The event as dp_accounting's RDP accountant reads it.

    Our events carry noise relative to the bound C on one record's contribution, as the PLD
    accountant reads them under both relations (for replace-one it shifts the means by +-C
    itself). The RDP accountant instead takes noise relative to the l2 sensitivity of the
    relation, 2C under replace-one: there every Gaussian's multiplier is halved.

    Args:
        event: the event, noise relative to C; neighbouring: "add_or_remove_one" or "replace_one".
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


SAMPLINGS = ("poisson", "fixed_cohort", "none")


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
        """One step's event; `sample_size` is the realised fixed cohort when it differs.

        Args:
            z: the step's noise multiplier; sample_size: the realised cohort (None: the plan's).
        """
        return sampled_gaussian_event(z, self.sampling, self.sampling_rate, self.population,
                                      self.sample_size if sample_size is None else sample_size)

    def event(self, z: float) -> dp_accounting.DpEvent:
        """The composition of every step's event for base multiplier `z` (its schedule applied)."""
        return compose_steps([self.step_event(m) for m in self.multipliers(z)])


def sampled_gaussian_event(noise_multiplier: float, sampling: str, sampling_rate: float = 1.0,
                           population: int = 0, sample_size: int = 0) -> dp_accounting.DpEvent:
    """One Gaussian release on a sampled cohort: Poisson, fixed size without replacement, or all.

    Shuffled batches are refused: reporting their Poisson epsilon would overstate privacy.

    Args:
        noise_multiplier: z (0 or below: non-private); sampling: "poisson", "fixed_cohort" or
            "none"; sampling_rate: q; population, sample_size: the fixed cohort's n and m.
    Raises:
        AccountingRefused: a sampling scheme with no honest accountant (shuffled batches).
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
