"""Compression that keeps the clipping bound: a public coordinate subset (top-k of the last public
aggregate) and a randomised Hadamard rotation. Both are linear maps with operator norm <= 1, so an
update clipped to L2 norm C stays within C, and the sensitivity of what is noised is unchanged.
"""

from __future__ import annotations

import math

import numpy as np


def topk_indices(reference: np.ndarray | None, k: int, length: int, seed: int) -> np.ndarray:
    """The k coordinates every client uploads this round (sorted).

    They must be the same for all clients, or the masked sum would not line up and the positions
    would leak; so they come from public data: the k largest entries of the last released
    aggregate, or a public random subset in the first round.

    Args:
        reference: the last released aggregate (None or all zeros: first round); k: how many;
        length: the update's length; seed: the round's public seed.
    """
    if reference is None or not np.any(reference):
        return np.sort(np.random.default_rng(seed).choice(length, size=k, replace=False))
    return np.sort(np.argpartition(-np.abs(reference), k - 1)[:k])


def padded_length(length: int) -> int:
    """The smallest power of two at or above `length` (1 for 0): the Hadamard transform's size."""
    return 1 << max(0, math.ceil(math.log2(max(length, 1))))


def _fwht(x: np.ndarray) -> np.ndarray:
    """Orthonormal fast Walsh-Hadamard transform along the last axis (length a power of 2)."""
    rows, n = x.shape
    y = x.copy()
    h = 1
    while h < n:
        y = y.reshape(rows, n // (2 * h), 2, h)
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = np.stack((a + b, a - b), axis=2).reshape(rows, n)
        h *= 2
    return y / math.sqrt(n)


def rotation_signs(length: int, seed: int) -> np.ndarray:
    """The random diagonal D of the rotation H D: public, drawn fresh each round.

    Args:
        length: the update's length (padded to a power of two); seed: the round's public seed.
    """
    return np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=padded_length(length))


def rotate(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Rows of x (zero-padded to a power of two) -> H D x; preserves each row's L2 norm.

    Args:
        x: the rows (clients, length); signs: from `rotation_signs`.
    """
    padded = np.zeros((x.shape[0], signs.size))
    padded[:, : x.shape[1]] = x
    return _fwht(padded * signs)


def unrotate(y: np.ndarray, signs: np.ndarray, length: int) -> np.ndarray:
    """Invert `rotate`: D H y (H is symmetric and orthonormal), cut back to `length`.

    Args:
        y: rotated rows; signs: the rotation's; length: the original length.
    """
    return (_fwht(y) * signs)[:, :length]


def rotated_coord_bound(clip: float, length: int, beta: float) -> float:
    """A bound on every entry of H D x for ||x|| <= clip, holding with probability >= 1 - beta.

    Each entry is sub-Gaussian with variance proxy clip^2 / n; a union bound over the n entries
    gives clip * sqrt(2 ln(2n / beta) / n). Entries beyond it are clamped, which only lowers
    the norm.

    Args:
        clip: the L2 bound of x; length: its length (padded); beta: the failure probability.
    """
    n = padded_length(length)
    return min(clip, clip * math.sqrt(2 * math.log(2 * n / beta) / n))
