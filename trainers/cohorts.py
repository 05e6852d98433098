"""Which clients take part in a round: Poisson sampling, a fixed-size uniform draw, or the next
slice of a shuffle; for one run (train_fedavg) or K runs side by side (train_runs), drawn so that
one run of the K replays the single run's cohorts exactly."""

from __future__ import annotations

import torch

from privbench.rng import generator
from privbench.spec.schema import TrainSpec


def sample_cohort(train: TrainSpec, n_clients: int, r: int, seed: int,
                  gen: torch.Generator) -> torch.Tensor:
    """Round r's cohort: Poisson, a fixed-size uniform draw, or the next slice of a shuffle.

    Args:
        train: sampling and cohort; n_clients: the population; r: the round (0-based);
        seed: the shuffle's seed (one permutation per epoch); gen: the sampling stream.
    Returns:
        The sampled client indices, sorted.
    """
    if train.sampling == "poisson":  # the draw of one run of `cohort_masks`
        return torch.nonzero(cohort_masks(train, n_clients, 1, r, seed, gen)[0]).flatten()
    m = int(train.cohort)
    if train.sampling == "fixed_cohort":
        return torch.randperm(n_clients, generator=gen)[:m].sort().values
    per_epoch = max(1, n_clients // m)
    epoch, slot = divmod(r, per_epoch)
    perm = torch.randperm(n_clients, generator=generator(seed, epoch))
    return perm[slot * m:(slot + 1) * m].sort().values


def cohort_masks(train: TrainSpec, n_clients: int, runs: int, r: int, seed: int,
                 gen: torch.Generator) -> torch.Tensor:
    """Round r's cohort of each of `runs` independent runs as a (runs, n_clients) bool mask.

    Poisson draws every run's clients in one call on the shared sampling stream (one run draws
    exactly what `sample_cohort` draws, so a single run replays `train_fedavg`'s cohorts); the
    other samplers draw run by run, in run order.

    Args:
        train: sampling and cohort; n_clients: clients per run; runs: K; r: the round (0-based);
        seed: the shuffle's seed; gen: the shared sampling stream.
    """
    if train.sampling == "poisson":
        return torch.rand(runs, n_clients, generator=gen) < train.cohort / n_clients
    masks = torch.zeros(runs, n_clients, dtype=torch.bool)
    for k in range(runs):
        masks[k, sample_cohort(train, n_clients, r, seed, gen)] = True
    return masks
