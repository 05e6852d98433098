"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2^521 - 1)."""

from __future__ import annotations

import functools
import secrets as _secrets
from collections.abc import Sequence

PRIME = (1 << 521) - 1  # a Mersenne prime larger than any 256-bit secret
SHARE_BYTES = 66  # ceil(521 / 8)


def split(secret: bytes, holders: Sequence[int], threshold: int) -> dict[int, bytes]:
    """Shares of `secret` for each holder id (x-coordinate = id + 1); any `threshold` recover it.

    Args:
        secret: the bytes to share; holders: the holders' ids; threshold: shares needed.
    Raises:
        ValueError: a threshold outside [1, len(holders)].
    """
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold {threshold} must lie in [1, {len(holders)}]")
    value = int.from_bytes(secret, "big")
    coeffs = [value] + [_secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    out = {}
    for h in holders:
        x, acc = h + 1, 0
        for c in reversed(coeffs):
            acc = (acc * x + c) % PRIME
        out[h] = acc.to_bytes(SHARE_BYTES, "big")
    return out


def combine(shares: dict[int, bytes], threshold: int, length: int = 32) -> bytes:
    """Recover the secret from at least `threshold` shares by Lagrange interpolation at zero.

    Args:
        shares: holder id -> share; threshold: shares used; length: the secret's bytes.
    Raises:
        ValueError: fewer than `threshold` shares.
    """
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares cannot recover a {threshold}-of-n secret")
    points = sorted(shares.items())[:threshold]
    weights = _lagrange_at_zero(tuple(h + 1 for h, _ in points))
    total = sum(int.from_bytes(share, "big") * w
                for (_, share), w in zip(points, weights, strict=True))
    return (total % PRIME).to_bytes(length, "big")


@functools.lru_cache(maxsize=1024)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Lagrange basis values at x = 0 for the points `xs` (cached: holder sets repeat)."""
    weights = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        weights.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(weights)
