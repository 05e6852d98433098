"""Adaptive clipping (Andrew et al. 2021): the clip norm tracks a target quantile of the update
norms through a geometric step driven by a noised count of clients under the clip.

The count and the update sum are one Gaussian mechanism on the concatenated vector: with update
noise z_delta and count noise sigma_b (on b - 1/2, sensitivity 1/2), the combined noise multiplier
is z = (z_delta^-2 + (2 sigma_b)^-2)^-1/2, so the accounted event uses z and the update gets the
larger z_delta.
"""

from __future__ import annotations

import math

import torch

from privbench.errors import PrivbenchError


def update_noise_multiplier(z: float, count_noise_multiplier: float) -> float:
    """z_delta such that the sum and the count together cost a Gaussian with multiplier z.

    Args:
        z: the accounted multiplier (0 or below: 0); count_noise_multiplier: sigma_b of the count.
    Raises:
        PrivbenchError: sigma_b at or below z / 2, which leaves nothing for the sum.
    """
    if z <= 0:
        return 0.0
    rest = z ** -2 - (2 * count_noise_multiplier) ** -2
    if rest <= 0:
        raise PrivbenchError(
            f"privacy.count_noise_multiplier = {count_noise_multiplier:g}: too little noise for "
            f"the budget (needs more than {z / 2:.3g}); raise it or the target epsilon")
    return rest ** -0.5


def next_clip(clip: float, norms: torch.Tensor, *, target_quantile: float, lr: float,
              count_noise_multiplier: float, expected_cohort: float,
              generator: torch.Generator) -> tuple[float, float]:
    """One geometric step: C <- C exp(-lr (b~ - gamma)). Returns (new clip, noised fraction b~).

    Args:
        clip: C; norms: the cohort's update norms (K,); target_quantile: gamma; lr: the step.
        count_noise_multiplier: sigma_b; expected_cohort: the divisor of the count;
        generator: the count's noise stream.
    """
    below = (norms <= clip).to(torch.float64) - 0.5
    noise = float(torch.randn((), generator=generator, dtype=torch.float64))
    fraction = (float(below.sum()) + count_noise_multiplier * noise) / expected_cohort + 0.5
    return clip * math.exp(-lr * (fraction - target_quantile)), fraction
