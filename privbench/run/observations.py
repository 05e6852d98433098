"""What a trainer hands on: the model, its Claim, and what each adversary can observe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from privbench.models.adapter import Params
from privbench.privacy.claim import Claim

# Threat surfaces (DESIGN.md): what an adversary can see of a run.
SURFACES = ("final_model", "final_weights", "iterates", "client_updates", "aggregates")



@dataclass
class Observations:
    """The surfaces a run exposes. A surface missing from `exposed` is not exposed."""

    final_params: Params
    iterates: list[Params] = field(default_factory=list)
    # The trainable parameters training started from (the white-box audit's origin: a
    # canary's projection is read on the steps from here).
    initial_params: Params = field(default_factory=dict)
    exposed: dict[str, str] = field(default_factory=dict)  # surface -> who can see it
    # Recorded only for the rounds a spec asks for (attacks.inversion.rounds), keyed by round:
    # the global model the round started from, each sampled client's update as the server
    # receives it (clipped, before central noise; not under secure aggregation), the sum the
    # server aggregates (before the noise it adds itself) and the clients in that sum.
    round_params: dict[int, Params] = field(default_factory=dict)
    client_updates: dict[int, dict[int, Params]] = field(default_factory=dict)
    aggregates: dict[int, Params] = field(default_factory=dict)
    cohorts: dict[int, list[int]] = field(default_factory=dict)

    def exposes(self, surface: str) -> bool:
        """Whether the run exposes `surface` (a key of `exposed`) to anyone."""
        return surface in self.exposed


@dataclass
class TrainedModel:
    """A trained model with the Claim of what ran and the per-round history."""

    model: nn.Module
    claim: Claim
    observations: Observations
    history: list[dict[str, Any]] = field(default_factory=list)
