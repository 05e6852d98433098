"""Client-level DP-FedAvg with central noise (McMahan et al. 2018): the server clips each
received update to C, sums them (in the clear or under secure aggregation), adds N(0, (zC)^2)
to every coordinate of the sum and divides by the public expected cohort, so the average's
sensitivity is C / expected cohort whatever the round's draw. An empty cohort still gets noise."""

from __future__ import annotations

import torch

from privbench.trainers.aggregation import clip_updates, dp_fedavg
from privbench.trainers.mechanisms.base import Aggregated, Mechanism, ServerRound, total


class CentralDP(Mechanism):
    """Server-side clipping and Gaussian noise on the sum of the clients' updates."""

    name = "central"

    def aggregate(self, server: ServerRound) -> Aggregated:
        clip = server.clip
        clipped, norms = (clip_updates(server.received, clip) if server.received is not None
                          else (None, torch.zeros(0)))
        clipped, z = server.aggregator.sum(clipped, server.r, server.record,
                                           server.noise_multiplier)
        step, _ = dp_fedavg(clipped, server.template, clip=clip, noise_multiplier=z,
                            expected_cohort=server.expected_cohort,
                            generator=server.gens["noise"])
        if server.view is not None:  # the server holds the clipped updates (or only their
            # secure sum), and that sum before it adds its own noise
            server.view.update(clients=server.clients,
                               seen=None if server.aggregator.secure else clipped,
                               total=None if clipped is None else total(clipped))
        return Aggregated(step, clip, norms)
