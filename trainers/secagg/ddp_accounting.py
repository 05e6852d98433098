"""Accounting for distributed discrete-Gaussian noise, from the noise actually present.

dp_accounting has no discrete-Gaussian event (checked: version 0.4.x ships Gaussian, Laplace, zCDP
and others, no DiscreteGaussianDpEvent). We use the distributed discrete Gaussian theorem of
Kairouz, Liu and Steinke (2021, Thm. 1): the sum of n i.i.d. N_Z(0, sigma^2) vectors in Z^d, added
to a sum whose L2 sensitivity is Delta, is (1/2) eps^2-zCDP with

    eps^2 = Delta^2 / (n sigma^2) + tau d / 2,
    tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1)).

A Gaussian mechanism with noise multiplier z is exactly (1 / (2 z^2))-zCDP, so we account the round
as a Gaussian with the equivalent z_eff = 1 / eps (the tau term is the documented correction for
discreteness; it is below 1e-30 at the integer scales used here). Without sampling this is exact in
RDP terms; under Poisson sampling we apply the Gaussian's amplification to z_eff, the same
approximation TFF's distributed-DP aggregator makes, and report both PLD and RDP epsilons.

n counts the contributors whose masked input entered the decoded sum, minus one: the client whose
privacy is at stake is absent from the neighbouring data set, so its own noise share is not
counted. Dropped clients' noise is never assumed.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Literal

import dp_accounting
from dp_accounting import pld

from privbench.privacy import accounting
from privbench.privacy.claim import Claim


def discreteness_tau(sigma: float, n: int) -> float:
    """KLS21's tau: how far a sum of n discrete Gaussians is from one discrete Gaussian.

    Args:
        sigma: each term's discrete Gaussian scale; n: the terms summed (tau is 0 for n <= 1).
    """
    if n <= 1 or sigma <= 0:
        return 0.0
    return 10 * sum(math.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, n))


def realised_noise_multiplier(sigma: float, noise_terms: int, sensitivity: float,
                              length: int) -> float:
    """z_eff of a sum carrying `noise_terms` i.i.d. N_Z(0, sigma^2) per entry, sensitivity Delta.

    Args:
        sigma: each term's scale; noise_terms: the terms (contributors minus one, for the worst
            case of one noise share missing); sensitivity: Delta; length: the vector's length.
    Returns:
        z_eff (0 without noise).
    """
    if noise_terms <= 0 or sigma <= 0:
        return 0.0
    eps_sq = (sensitivity**2 / (noise_terms * sigma**2)
              + discreteness_tau(sigma, noise_terms) * length / 2)
    return 1 / math.sqrt(eps_sq)


def mixed_noise_multiplier(variances: list[float], sensitivity: float, length: int) -> float:
    """z_eff for a sum of independent discrete Gaussians of different variances (hierarchy).

    The zCDP term uses the total variance; tau is evaluated at the smallest sigma over all terms,
    which over-states it (tau falls as sigma grows), so the bound stays conservative.

    Args:
        variances: every noise term's sigma^2; sensitivity: Delta; length: the vector's length.
    """
    live = [v for v in variances if v > 0]
    if not live:
        return 0.0
    total = sum(live)
    tau = discreteness_tau(math.sqrt(min(live)), len(live))
    return 1 / math.sqrt(sensitivity**2 / total + tau * length / 2)


def rounds_event(noise_multipliers: list[float], sampling_rate: float) -> dp_accounting.DpEvent:
    """The composition of Poisson-subsampled Gaussian rounds with each round's realised z.

    z values are rounded DOWN to 4 significant digits so that repeated values compose as one
    self-composed event (rounding down only raises the epsilon).

    Args:
        noise_multipliers: each round's realised z; sampling_rate: the cohort's q.
    """
    if not noise_multipliers:
        return dp_accounting.NoOpDpEvent()
    if min(noise_multipliers) <= 0:
        return dp_accounting.NonPrivateDpEvent()
    counts = Counter(_round_down(z) for z in noise_multipliers)
    parts = []
    for z, count in sorted(counts.items()):
        inner: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(z)
        if sampling_rate < 1.0:
            inner = dp_accounting.PoissonSampledDpEvent(sampling_rate, inner)
        parts.append(dp_accounting.SelfComposedDpEvent(inner, count))
    return parts[0] if len(parts) == 1 else dp_accounting.ComposedDpEvent(parts)


def claim_for_rounds(*, noise_multipliers: list[float], sampling_rate: float, delta: float,
                     target_epsilon: float, clip: float,
                     neighbouring: Literal["add_or_remove_one", "replace_one"],
                     guarantee_against: list[str]) -> Claim:
    """The Claim of the rounds that ran, each with the noise its decoded sum actually carried.

    Args:
        noise_multipliers, sampling_rate: as in `rounds_event`.
        delta, target_epsilon, clip, neighbouring, guarantee_against: as in the Claim.
    """
    event = rounds_event(noise_multipliers, sampling_rate)
    private = bool(noise_multipliers) and min(noise_multipliers) > 0
    return Claim(
        epsilon=accounting.pld_epsilon(event, delta, neighbouring) if noise_multipliers else 0.0,
        delta=delta,
        epsilon_rdp=accounting.rdp_epsilon(event, delta, neighbouring) if noise_multipliers
        else 0.0,
        target_epsilon=target_epsilon,
        unit="client",
        neighbouring=neighbouring,
        accountant="pld",
        sampling="poisson" if sampling_rate < 1.0 else "none",
        noise_multiplier=min(noise_multipliers) if noise_multipliers else 0.0,
        sampling_rate=sampling_rate,
        steps=len(noise_multipliers),
        clip=clip if private else None,
        guarantee_against=guarantee_against if private else [],
        dp_event=accounting.event_to_dict(event),
    )


def upper_epsilon(noise_multipliers: list[float], sampling_rate: float, delta: float,
                  neighbouring: str) -> float:
    """A quick PLD epsilon on a 10x coarser pessimistic grid: an upper bound, for side claims.

    Args:
        noise_multipliers, sampling_rate: as in `rounds_event`; delta, neighbouring: the claim's.
    """
    event = rounds_event(noise_multipliers, sampling_rate)
    if isinstance(event, dp_accounting.NonPrivateDpEvent):
        return math.inf
    acc = pld.PLDAccountant(accounting.NEIGHBOURING[neighbouring],
                            value_discretization_interval=accounting.CALIBRATION_DISCRETIZATION)
    return float(acc.compose(event).get_epsilon(delta))


def _round_down(z: float) -> float:
    digits = 3 - math.floor(math.log10(z))
    return math.floor(z * 10**digits) / 10**digits
