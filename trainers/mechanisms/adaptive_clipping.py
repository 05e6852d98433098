"""Adaptive clipping as a wrapper (Andrew et al. 2021; trainers/adaptive_clip.py): the clip tracks
a target quantile of the update norms through a noised count of clients under the clip. The
count and the update sum are one Gaussian mechanism, so the round is accounted at the wrapped
mechanism's z while the update gets the larger z_delta (`update_noise_multiplier`)."""

from __future__ import annotations

from privbench.trainers.adaptive_clip import next_clip, update_noise_multiplier
from privbench.trainers.mechanisms.base import Aggregated, Mechanism, ServerRound, Wrapper


class AdaptiveClipping(Wrapper):
    """Wraps a central mechanism; its aggregate also returns the next round's clip."""

    name = "adaptive_clip"

    def __init__(self, inner: Mechanism, *, target_quantile: float, clip_lr: float,
                 count_noise_multiplier: float, expected_cohort: float) -> None:
        super().__init__(inner)
        self.target_quantile, self.clip_lr = target_quantile, clip_lr
        self.count_noise_multiplier, self.expected_cohort = count_noise_multiplier, expected_cohort

    def noise_multiplier(self, r: int) -> float:
        """z_delta: what is left for the update sum once the count has its share."""
        return update_noise_multiplier(self.inner.noise_multiplier(r),
                                       self.count_noise_multiplier)

    def aggregate(self, server: ServerRound) -> Aggregated:
        out = self.inner.aggregate(server)
        new_clip, fraction = next_clip(server.clip, out.norms,
                                       target_quantile=self.target_quantile, lr=self.clip_lr,
                                       count_noise_multiplier=self.count_noise_multiplier,
                                       expected_cohort=self.expected_cohort,
                                       generator=server.gens["clip"])
        if server.record is not None:
            server.record["clip"], server.record["noised_fraction_under_clip"] = \
                server.clip, fraction
        return Aggregated(out.step, new_clip, out.norms)
