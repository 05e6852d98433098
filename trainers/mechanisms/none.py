"""No DP: FedAvg of the clients' updates (McMahan et al. 2017), with the training diagnostics a
non-private run may record (the clients' mean loss and update norm)."""

from __future__ import annotations

from privbench.models.adapter import Params
from privbench.trainers.aggregation import update_norms
from privbench.trainers.mechanisms.base import (
    Aggregated,
    ClientRound,
    Mechanism,
    ServerRound,
    apply_hook,
    train_clients,
)


class NoDP(Mechanism):
    """Local training and the plain mean; nothing is clipped or noised."""

    name = "none"

    def client_updates(self, job: ClientRound) -> Params:
        sent, losses = train_clients(job)
        if job.record is not None and losses.numel():
            job.record["client_loss"] = float(losses.mean())
        return apply_hook(job, sent)

    def aggregate(self, server: ServerRound) -> Aggregated:
        if server.received is None:
            return Aggregated(None, server.clip)
        self.observe(server, server.received)
        if server.record is not None:
            server.record["update_norm"] = float(update_norms(server.received).mean())
        return Aggregated(server.aggregator.mean(server.received, server.clip, server.r,
                                                 server.record), server.clip)
