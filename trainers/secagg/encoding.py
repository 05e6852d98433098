"""Fixed-point encoding of clipped updates into Z / 2^m: stochastic rounding, a norm-preserving
conditional rounding for DP, and an overflow check that fails before a sum could wrap."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privbench.errors import PrivbenchError

# P(one Gaussian coordinate beyond TAIL_SIGMAS standard deviations) < 1e-40: the noise part of
# the overflow bound.
TAIL_SIGMAS = 13.5


@dataclass(frozen=True)
class FixedPoint:
    """Map |x_i| <= coord_bound onto integers of at most bits - 1 magnitude bits, mod 2^m."""

    coord_bound: float
    bits: int = 16
    modulus_bits: int = 32

    @property
    def levels(self) -> int:
        """The largest integer a clamped coordinate maps to: 2^(bits - 1) - 1."""
        return (1 << (self.bits - 1)) - 1

    @property
    def scale(self) -> float:
        """Integer steps per unit: `levels / coord_bound`."""
        return self.levels / self.coord_bound

    def quantise(self, x: np.ndarray, rng: np.random.Generator,
                 norm_bound: float | None = None) -> np.ndarray:
        """Stochastically round x * scale (rows: clients) to int64, unbiased per entry.

        Entries are first clamped to +-coord_bound (which never raises a row's L2 norm). With
        `norm_bound`, a row whose rounded L2 norm exceeds it is re-rounded (conditional
        randomised rounding, Kairouz et al. 2021), so the bound holds with certainty.

        Args:
            x: the rows (clients, length); rng: the rounding stream;
            norm_bound: the integer-domain L2 bound to enforce (None: none).
        Returns:
            int64, x's shape.
        """
        v = np.clip(x, -self.coord_bound, self.coord_bound) * self.scale
        low = np.floor(v)
        frac = v - low
        q = (low + (rng.random(v.shape) < frac)).astype(np.int64)
        if norm_bound is not None:
            for _ in range(1000):
                bad = np.flatnonzero(np.sqrt((q.astype(np.float64) ** 2).sum(axis=-1))
                                     > norm_bound)
                if bad.size == 0:
                    break
                q[bad] = (low[bad] + (rng.random(v[bad].shape) < frac[bad])).astype(np.int64)
            else:
                raise RuntimeError("conditional rounding did not meet its norm bound")
        return q

    def rounded_norm_bound(self, clip: float, length: int, beta: float) -> float:
        """The integer-domain L2 bound that rounding meets with probability >= 1 - beta
        (Kairouz et al. 2021, Thm. 4), enforced exactly by re-rounding.

        Args:
            clip: the float L2 bound; length: the vector's length; beta: the failure probability.
        """
        c = clip * self.scale
        return math.sqrt(c**2 + length / 4
                         + math.sqrt(2 * math.log(1 / beta)) * (c + math.sqrt(length) / 2))

    def to_ring(self, q: np.ndarray) -> np.ndarray:
        """Integers -> uint32 residues mod 2^m (two's complement, then masked)."""
        return (q.astype(np.int64) & ((1 << self.modulus_bits) - 1)).astype(np.uint32)

    def from_ring(self, total: np.ndarray) -> np.ndarray:
        """uint32 residues mod 2^m -> the signed integers in [-2^(m-1), 2^(m-1))."""
        t = total.astype(np.int64)
        half = 1 << (self.modulus_bits - 1)
        return np.where(t >= half, t - (1 << self.modulus_bits), t)

    def check_overflow(self, contributors: int, noise_std: float) -> None:
        """Fail unless `contributors` inputs plus noise of std `noise_std` cannot wrap.

        Args:
            contributors: the inputs summed; noise_std: the summed noise's standard deviation.
        Raises:
            PrivbenchError: the sum could wrap (names secagg.bits and secagg.modulus_bits).
        """
        worst = contributors * (self.levels + 1) + TAIL_SIGMAS * noise_std
        if worst >= 1 << (self.modulus_bits - 1):
            raise PrivbenchError(
                f"secagg.bits = {self.bits}: {contributors} clients' inputs plus noise can reach "
                f"2^{math.log2(worst):.1f}, which wraps modulo 2^{self.modulus_bits}; lower "
                "secagg.bits, raise secagg.modulus_bits (at most 32) or shrink the cohort")
