"""Server-side aggregation: plain FedAvg and client-level DP-FedAvg (McMahan et al. 2018)."""

from __future__ import annotations

import torch

from privbench.models.adapter import Params


def update_norms(updates: Params) -> torch.Tensor:
    """L2 norm of each client's whole update (all parameters flattened): shape (K,)."""
    squares = [u.flatten(start_dim=1).pow(2).sum(dim=1) for u in updates.values()]
    return torch.stack(squares).sum(dim=0).sqrt()


def clip_factor(norms: torch.Tensor, clip: float) -> torch.Tensor:
    """The factor min(1, clip / norm) that scales a vector of each norm into the clipping ball.

    The one place clipping is decided: client updates, per-example gradients (both DP-SGD paths)
    and the audit's gradient canaries all scale by it.

    Args:
        norms: the L2 norms, any shape; clip: C.
    Returns:
        The factors, `norms`' shape (norms below 1e-12 are treated as 1e-12).
    """
    return (clip / norms.clamp(min=1e-12)).clamp(max=1.0)


def clip_updates(updates: Params, clip: float) -> tuple[Params, torch.Tensor]:
    """Scale each client's update to L2 norm at most `clip`; return clipped updates and norms.

    Args:
        updates: stacked (K, ...); clip: C.
    Returns:
        (clipped updates (K, ...), the norms before clipping (K,)).
    """
    norms = update_norms(updates)
    factor = clip_factor(norms, clip)
    clipped = {name: u * factor.view(-1, *([1] * (u.dim() - 1))) for name, u in updates.items()}
    return clipped, norms


def fedavg_mean(updates: Params) -> Params:
    """Unweighted mean of the realised cohort's updates (non-private FedAvg)."""
    return {name: u.mean(dim=0) for name, u in updates.items()}


def gaussian_like(template: Params, std: float, generator: torch.Generator) -> Params:
    """Independent N(0, std^2) noise with the shapes of `template` (unbatched).

    Args:
        template: the shapes and dtypes; std: the standard deviation; generator: the noise stream.
    """
    return {name: torch.randn(t.shape, generator=generator, dtype=t.dtype) * std
            for name, t in template.items()}


def dp_fedavg(clipped: Params | None, template: Params, *, clip: float, noise_multiplier: float,
              expected_cohort: float, generator: torch.Generator) -> tuple[Params, Params]:
    """Sum clipped updates, add N(0, (z C)^2) per coordinate, divide by the expected cohort.

    Dividing by the expected (not realised) cohort keeps the sensitivity of the average at
    C / expected_cohort whatever the round's Poisson draw. Noise is added even to an empty cohort.
    Returns (the averaged update the model applies, the noised sum the server sees).

    Args:
        clipped: the clipped updates (K, ...) (None: an empty cohort); template: unbatched shapes.
        clip, noise_multiplier, expected_cohort, generator: C, z, the divisor and the noise stream.
    """
    if clipped is None:
        total = {name: torch.zeros_like(t) for name, t in template.items()}
    else:
        total = {name: u.sum(dim=0) for name, u in clipped.items()}
    noise = gaussian_like(template, noise_multiplier * clip, generator)
    noised = {name: total[name] + noise[name] for name in total}
    return {name: v / expected_cohort for name, v in noised.items()}, noised
