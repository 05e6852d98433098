"""Client-level local DP: each client clips its own update to C and adds N(0, (zC)^2) before it
leaves the device, so the guarantee holds against the server too; the server averages what it
receives."""

from __future__ import annotations

from privbench.models.adapter import Params
from privbench.trainers.aggregation import clip_updates, gaussian_like
from privbench.trainers.mechanisms.base import ClientRound, Mechanism, apply_hook, train_clients


class LocalDP(Mechanism):
    """Client-side clipping and noise; the plain (or secure) mean on the server."""

    name = "local"

    def client_updates(self, job: ClientRound) -> Params:
        sent, _ = train_clients(job)
        sent = apply_hook(job, sent)
        clipped, _ = clip_updates(sent, job.clip)
        noise = gaussian_like(clipped, job.noise_multiplier * job.clip, job.gens["noise"])
        return {n: clipped[n] + noise[n] for n in clipped}
