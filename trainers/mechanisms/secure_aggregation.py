"""Secure aggregation as the sum a mechanism aggregates through: the server learns only the
cohort's sum (trainers/secagg/trainer_hook.py's SecureRounds runs the protocol, quantises,
compresses and, with distributed DP, lets the clients add their noise)."""

from __future__ import annotations

from typing import Any

from privbench.models.adapter import Params
from privbench.trainers.aggregation import clip_updates
from privbench.trainers.secagg.trainer_hook import SecureRounds


class SecureSum:
    """The `Aggregator` of a run under secure aggregation."""

    secure = True

    def __init__(self, rounds: SecureRounds) -> None:
        self.rounds = rounds

    def sum(self, clipped: Params | None, r: int, record: dict[str, Any] | None,
            noise_multiplier: float) -> tuple[Params | None, float]:
        """The secure sum as a batch of one, and the noise the server still adds (none under
        distributed DP, else the planned central noise)."""
        return self.rounds.sum_round(clipped, r, record if record is not None else {})

    def mean(self, updates: Params, clip: float, r: int,
             record: dict[str, Any] | None) -> Params:
        """The contributors' mean through the secure sum (it needs the clipping bound)."""
        return self.rounds.mean_round(clip_updates(updates, clip)[0], r,
                                      record if record is not None else {})
