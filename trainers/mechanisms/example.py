"""Example-level DP-SGD inside each client (trainers/dpsgd.py): Poisson-sampled records,
per-example clipping to C and N(0, (zC)^2) noise on every local step; the server averages the
noised updates."""

from __future__ import annotations

from privbench.models.adapter import Params
from privbench.trainers.dpsgd import dp_sgd
from privbench.trainers.mechanisms.base import ClientRound, Mechanism


class ExampleDP(Mechanism):
    """DP-SGD on every sampled client; the per-example engine is resolved before round 1."""

    name = "example"
    uses_per_example_engine = True

    def client_updates(self, job: ClientRound) -> Params:
        canaries = job.gradient_canaries
        return dp_sgd(job.adapter, job.params, job.data.rows(job.rows), steps=job.local_steps,
                      sampling_rate=job.record_rate, expected_batch=job.train.batch_size,
                      lr=job.train.lr, clip=job.clip, noise_multiplier=job.noise_multiplier,
                      generator=job.gens["local"], noise_generator=job.gens["noise"],
                      canaries=None if canaries is None else canaries.rows(job.rows),
                      engine=job.engine, batched_params=job.batched, optimizer=job.optimizer,
                      microbatch=job.microbatch)
