"""A noise schedule as a wrapper: round r's noise (and its accounted Gaussian) is the wrapped
mechanism's times the schedule's factor of r (privacy.noise_schedule over equal spans of the
rounds, `privacy_plan.round_factors`); the plan composes the rounds' different events."""

from __future__ import annotations

from privbench.trainers.mechanisms.base import Mechanism, Wrapper


class NoiseSchedule(Wrapper):
    """Scales the wrapped mechanism's noise multiplier by each round's factor."""

    name = "noise_schedule"

    def __init__(self, inner: Mechanism, factors: list[float]) -> None:
        super().__init__(inner)
        self.factors = list(factors)

    def accounted_z(self, r: int) -> float:
        return self.inner.accounted_z(r) * self.factors[r]

    def noise_multiplier(self, r: int) -> float:
        return self.inner.noise_multiplier(r) * self.factors[r]
