"""The Claim: the privacy guarantee a trained model carries, derived from what actually ran."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_serializer, field_validator

from privbench import accounting


class Claim(BaseModel):
    """An (epsilon, delta) statement plus everything needed to check and explain it.

    `dp_event` is the executed dp_accounting event; `epsilon` is its PLD epsilon at `delta`
    and `epsilon_rdp` the RDP epsilon of the same event, reported beside it.
    """

    model_config = ConfigDict(extra="forbid")

    epsilon: float
    delta: float
    epsilon_rdp: float
    target_epsilon: float
    unit: Literal["client", "example"]
    neighbouring: Literal["add_or_remove_one", "replace_one"]
    accountant: Literal["pld"]
    sampling: Literal["poisson", "none"]
    noise_multiplier: float
    sampling_rate: float
    steps: int
    clip: float | None
    guarantee_against: list[str]
    dp_event: dict[str, Any]

    @property
    def is_private(self) -> bool:
        return math.isfinite(self.epsilon)

    def event(self) -> Any:
        """The executed DpEvent, rebuilt from its recorded description."""
        return accounting.event_from_dict(self.dp_event)

    @field_serializer("epsilon", "epsilon_rdp", "target_epsilon", when_used="json")
    def _inf_as_string(self, v: float) -> float | str:
        return "inf" if math.isinf(v) else v

    @field_validator("epsilon", "epsilon_rdp", "target_epsilon", mode="before")
    @classmethod
    def _inf_from_string(cls, v: Any) -> Any:
        return math.inf if v == "inf" else v


def claim_for_poisson_gaussian(*, noise_multiplier: float, sampling_rate: float, steps: int,
                               delta: float, target_epsilon: float, clip: float | None,
                               unit: Literal["client", "example"],
                               neighbouring: Literal["add_or_remove_one", "replace_one"],
                               guarantee_against: list[str]) -> Claim:
    """The Claim of `steps` Poisson-subsampled Gaussian rounds, accounted with PLD (and RDP)."""
    event = accounting.poisson_gaussian_event(noise_multiplier, sampling_rate, steps)
    private = noise_multiplier > 0
    return Claim(
        epsilon=accounting.pld_epsilon(event, delta, neighbouring),
        delta=delta,
        epsilon_rdp=accounting.rdp_epsilon(event, delta, neighbouring),
        target_epsilon=target_epsilon,
        unit=unit,
        neighbouring=neighbouring,
        accountant="pld",
        sampling="poisson" if sampling_rate < 1.0 else "none",
        noise_multiplier=noise_multiplier,
        sampling_rate=sampling_rate,
        steps=steps,
        clip=clip if private else None,
        guarantee_against=guarantee_against if private else [],
        dp_event=accounting.event_to_dict(event),
    )
