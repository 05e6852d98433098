"""The Claim: the privacy guarantee a trained model carries, derived from what actually ran."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_serializer, field_validator

from privbench.privacy import accounting


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
    accountant: Literal["pld", "rdp"]
    sampling: Literal["poisson", "fixed_cohort", "none"]
    noise_multiplier: float
    sampling_rate: float
    steps: int
    clip: float | None
    guarantee_against: list[str]
    dp_event: dict[str, Any]
    # Where the noise is added ("central": by the server; "local": by each client before it
    # sends) and whom the guarantee must trust. Notes name every conservative choice and fallback.
    setting: Literal["central", "local"] = "central"
    trusted: list[str] = []
    released: str = "the final model and every round's global model"
    pld_grid: float | None = None
    count_noise_multiplier: float | None = None
    notes: list[str] = []

    @property
    def is_private(self) -> bool:
        """Whether the claim is a finite epsilon (False for a run without DP)."""
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


def claim_from_event(event: Any, *, delta: float, target_epsilon: float,
                     unit: Literal["client", "example"],
                     neighbouring: Literal["add_or_remove_one", "replace_one"],
                     sampling: Literal["poisson", "fixed_cohort", "none"],
                     noise_multiplier: float, sampling_rate: float, steps: int,
                     clip: float | None, guarantee_against: list[str],
                     pld_grid: float | None = None,
                     rdp_orders: tuple[float, ...] | None = None, **extra: Any) -> Claim:
    """The Claim of an executed DpEvent: PLD epsilon (with a noted fallback) and RDP beside it.

    `pld_grid` fixes the PLD discretisation (default: `accounting.pld_grid_for` the epsilon);
    `rdp_orders` the Renyi orders of the RDP figure (default: dp_accounting's).

    Args:
        event: the executed DpEvent; delta, target_epsilon: the spec's delta and epsilon.
        unit, neighbouring, sampling: the unit of privacy, the adjacency and the sampling scheme.
        noise_multiplier, sampling_rate, steps, clip: the mechanism as executed.
        guarantee_against: who the guarantee holds against; pld_grid, rdp_orders: as above;
        extra: further Claim fields (notes are merged).
    Returns:
        The Claim; a non-private one (epsilon inf) has no sampling, clip, trust or guarantee.
    """
    eps_rdp = accounting.rdp_epsilon_or_inf(event, delta, neighbouring, rdp_orders)
    eps, accountant, grid, notes = accounting.epsilon_with_fallback(
        event, delta, neighbouring, grid=pld_grid,
        rdp_estimate=eps_rdp if rdp_orders is None else None)
    if pld_grid is not None and pld_grid != accounting.PLD_DISCRETIZATION:
        notes.append(f"PLD on a {pld_grid:g} grid (pessimistic, an upper bound)")
    private = math.isfinite(eps)
    extra["notes"] = [*extra.get("notes", []), *notes]
    if not private:
        extra.update(trusted=[], notes=[])
    return Claim(
        epsilon=eps, delta=delta,
        epsilon_rdp=eps_rdp,
        target_epsilon=target_epsilon, unit=unit, neighbouring=neighbouring,
        accountant=accountant, sampling=sampling if private else "none",
        noise_multiplier=noise_multiplier, sampling_rate=sampling_rate, steps=steps,
        clip=clip if private else None,
        guarantee_against=guarantee_against if private else [],
        dp_event=accounting.event_to_dict(event), pld_grid=grid, **extra,
    )


def claim_for_poisson_gaussian(*, noise_multiplier: float, sampling_rate: float, steps: int,
                               delta: float, target_epsilon: float, clip: float | None,
                               unit: Literal["client", "example"],
                               neighbouring: Literal["add_or_remove_one", "replace_one"],
                               guarantee_against: list[str],
                               pld_grid: float | None = None,
                               rdp_orders: tuple[float, ...] | None = None) -> Claim:
    """The Claim of `steps` Poisson-subsampled Gaussian rounds, accounted with PLD (and RDP).

    Args:
        noise_multiplier, sampling_rate, steps: the mechanism (rate 1: no sampling).
        delta, target_epsilon, clip, unit, neighbouring, guarantee_against, pld_grid,
            rdp_orders: as in `claim_from_event`.
    """
    event = accounting.poisson_gaussian_event(noise_multiplier, sampling_rate, steps)
    return claim_from_event(
        event, delta=delta, target_epsilon=target_epsilon, unit=unit, neighbouring=neighbouring,
        sampling="poisson" if sampling_rate < 1.0 else "none",
        noise_multiplier=noise_multiplier, sampling_rate=sampling_rate, steps=steps, clip=clip,
        guarantee_against=guarantee_against, pld_grid=pld_grid, rdp_orders=rdp_orders,
    )
