"""The `attacks.inversion.noise = "client"` view: a recorded update with the cell's N(0, (z C)^2)
added, as the server would receive it if each client added the DP noise itself (local or
distributed DP). One function, for the classifier and the language-model inversion scorers."""

from __future__ import annotations

import torch

from privbench.models.adapter import Params


def with_client_noise(update: Params, std: float, gen: torch.Generator) -> Params:
    """`update` plus Gaussian noise of standard deviation `std` on every entry (drawn from `gen`
    in the update's parameter order); `update` itself when `std` is 0.

    Args:
        update: a client's update (or a sum of updates), by parameter name.
        std: the noise's standard deviation (z C, times sqrt(copies) for a sum of copies).
        gen: the scorer's generator.

    Returns:
        The noised update.
    """
    if std == 0:
        return update
    return {k: v + torch.randn(v.shape, generator=gen, dtype=v.dtype) * std
            for k, v in update.items()}
