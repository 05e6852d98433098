"""A cohort's clipped updates -> compressed, quantised, optionally noised, securely summed.

Order (the clipping bound C is the sensitivity of what is noised at every step):
clip to C -> public top-k subset (norm-non-increasing) -> randomised Hadamard rotation
(norm-preserving) -> clamp entries and stochastic rounding at `bits` with conditional rounding to a
known integer norm bound Delta -> each client adds N_Z(0, sigma^2) -> mod 2^m -> SecAgg(+) -> the
server decodes the sum, un-rotates and scatters it back.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from privbench.rng import STREAM_STRIDE, derived_seed
from privbench.trainers.secagg import compression, ddp_accounting
from privbench.trainers.secagg.discrete_gaussian import sample_discrete_gaussian
from privbench.trainers.secagg.encoding import FixedPoint
from privbench.trainers.secagg.protocol import Dropouts, SecureSum, run_secure_sum
from privbench.trainers.secagg.setup import SecAggConfig

ROUNDING_BETA = math.exp(-0.5)  # Kairouz et al.'s default failure rate for the norm bound


@dataclass(frozen=True)
class SecureAggregation:
    """How one cohort's updates are summed: quantisation, protocol, noise and compression."""

    clip: float
    bits: int = 16
    modulus_bits: int = 32
    threshold_fraction: float = 0.6
    neighbours: int = 0
    noise_multiplier: float = 0.0  # target z for distributed DP; 0 = no client-side noise
    design_contributors: int = 2  # clients whose noise is planned to reach the target z
    compression: Literal["none", "rotation", "topk", "topk+rotation"] = "none"
    topk_fraction: float = 0.1
    seed: int = 0  # public randomness: graph, rotation signs, first top-k subset


@dataclass
class RoundOutcome:
    """What the server obtained from one secure round and what it cost."""

    total: np.ndarray  # decoded sum, float64, full length
    contributors: list[int]
    noise_multiplier: float  # realised z_eff of the decoded sum (0 without distributed DP)
    sensitivity: float  # integer-domain L2 bound Delta of one client's contribution
    client_sigma: float  # integer-domain std of each client's discrete Gaussian share
    scale: float
    uploaded_bytes: float  # mean bytes a contributing client uploaded
    plain_bytes: int  # bytes of the same client's plain quantised update
    uploaded_length: int
    seconds: float
    extras: dict[str, float] = field(default_factory=dict)


class SecureAggregator:
    """Keeps the public state across rounds (the last aggregate, for top-k) and runs rounds."""

    def __init__(self, spec: SecureAggregation, length: int):
        self.spec = spec
        self.length = length
        self.reference: np.ndarray | None = None
        self.last_sum: SecureSum | None = None  # the last round's protocol run and inputs,
        self.last_encoded: EncodedCohort | None = None  # kept for inspection by tests

    def client_sigma(self, sensitivity: float) -> float:
        """Each client's share: (design_contributors - 1) shares give the target z."""
        if self.spec.noise_multiplier <= 0:
            return 0.0
        return self.spec.noise_multiplier * sensitivity / math.sqrt(
            max(1, self.spec.design_contributors - 1))

    def encode(self, updates: np.ndarray, round_index: int,
               rng: np.random.Generator) -> EncodedCohort:
        """Clip, compress, quantise and noise each client's update (rows) on its own device.

        Args:
            updates: the cohort's flat updates (clients, length); round_index: seeds the round's
                top-k subset, rotation and neighbour graph; rng: the rounding and noise stream.
        Returns:
            The EncodedCohort (also kept as `last_encoded`).
        """
        spec = self.spec
        x = _clip_rows(np.asarray(updates, dtype=np.float64), spec.clip)
        round_seed = derived_seed(spec.seed, round_index, STREAM_STRIDE)
        index = None
        if spec.compression.startswith("topk"):
            k = max(1, math.ceil(spec.topk_fraction * self.length))
            index = compression.topk_indices(self.reference, k, self.length, round_seed)
            x = x[:, index]
        sent_length = x.shape[1]
        signs = None
        coord_bound = spec.clip
        if spec.compression.endswith("rotation"):
            signs = compression.rotation_signs(sent_length, round_seed)
            x = compression.rotate(x, signs)
            coord_bound = compression.rotated_coord_bound(spec.clip, sent_length, 1e-6)
        fp = FixedPoint(coord_bound=coord_bound, bits=spec.bits, modulus_bits=spec.modulus_bits)
        ring_length = x.shape[1]
        dp = spec.noise_multiplier > 0
        delta = (fp.rounded_norm_bound(spec.clip, ring_length, ROUNDING_BETA) if dp
                 else spec.clip * fp.scale + math.sqrt(ring_length))
        quantised = fp.quantise(x, rng, norm_bound=delta if dp else None)
        sigma = self.client_sigma(delta)
        noised = quantised
        if sigma > 0:
            noise = sample_discrete_gaussian(sigma, quantised.size, rng)
            noised = quantised + noise.reshape(quantised.shape)
        config = SecAggConfig(length=ring_length, threshold_fraction=spec.threshold_fraction,
                              neighbours=spec.neighbours, modulus_bits=spec.modulus_bits,
                              round_tag=f"round-{round_index}".encode(), graph_seed=round_seed)
        self.last_encoded = EncodedCohort(
            quantised=quantised, noised=noised, fixed_point=fp, sensitivity=delta,
            client_sigma=sigma, config=config, index=index, signs=signs, sent_length=sent_length)
        return self.last_encoded

    def decode(self, signed_total: np.ndarray, enc: EncodedCohort) -> np.ndarray:
        """The server's side: integers -> floats, undo the rotation, scatter top-k back.

        Args:
            signed_total: the ring sum as signed integers; enc: the round's EncodedCohort.
        Returns:
            The float sum (length,); it becomes `reference`, the next round's top-k source.
        """
        summed = signed_total.astype(np.float64)[None, :] / enc.fixed_point.scale
        if enc.signs is not None:
            summed = compression.unrotate(summed, enc.signs, enc.sent_length)
        total = np.zeros(self.length)
        if enc.index is None:
            total[:] = summed[0, : self.length]
        else:
            total[enc.index] = summed[0]
        self.reference = total
        return total

    def run_round(self, updates: np.ndarray, round_index: int, rng: np.random.Generator,
                  dropouts: Dropouts | None = None) -> RoundOutcome:
        """Securely sum the rows of `updates` (clients x length); return the decoded sum.

        Args:
            updates: the cohort's flat updates (clients, length); round_index: the round;
            rng: the rounding and noise stream; dropouts: who goes silent at each stage.
        Returns:
            The RoundOutcome: sum, contributors, realised z, bytes sent and time.
        Raises:
            PrivbenchError: the fixed-point sum could wrap (secagg.bits too high for the cohort).
        """
        start = time.perf_counter()
        enc = self.encode(updates, round_index, rng)
        n = enc.noised.shape[0]
        enc.fixed_point.check_overflow(n, math.sqrt(n) * enc.client_sigma)
        result = run_secure_sum({u: enc.fixed_point.to_ring(enc.noised[u]) for u in range(n)},
                                enc.config, dropouts)
        self.last_sum = result
        total = self.decode(enc.fixed_point.from_ring(result.total), enc)
        contributors = result.contributors
        z = ddp_accounting.realised_noise_multiplier(enc.client_sigma, len(contributors) - 1,
                                                     enc.sensitivity, enc.config.length)
        return RoundOutcome(
            total=total, contributors=contributors, noise_multiplier=z,
            sensitivity=enc.sensitivity, client_sigma=enc.client_sigma,
            scale=enc.fixed_point.scale,
            uploaded_bytes=float(np.mean([result.uploaded[u] for u in contributors])),
            plain_bytes=enc.plain_bytes, uploaded_length=enc.config.length,
            seconds=time.perf_counter() - start)


@dataclass
class EncodedCohort:
    """Every client's integer update before masking, and the public parameters that made it."""

    quantised: np.ndarray  # int64 (clients, ring length), before noise
    noised: np.ndarray  # quantised + each client's discrete Gaussian share
    fixed_point: FixedPoint
    sensitivity: float
    client_sigma: float
    config: SecAggConfig
    index: np.ndarray | None
    signs: np.ndarray | None
    sent_length: int

    @property
    def plain_bytes(self) -> int:
        """Bytes of one client's plain quantised update of the same length, without SecAgg."""
        return math.ceil(self.config.length * self.fixed_point.bits / 8)


def _clip_rows(x: np.ndarray, clip: float) -> np.ndarray:
    norms = np.sqrt((x**2).sum(axis=1, keepdims=True))
    return x * np.minimum(1.0, clip / np.maximum(norms, 1e-12))
