"""The one place where a spec's seed becomes random streams.

Every random draw in privbench comes from a stream derived here from the cell's seed, so that the
same spec and seed give the same numbers and separate concerns never share a stream: across the
cells of a sweep the same clients are sampled each round and only the noise differs. Two strides
keep derived seeds apart: `STREAM_STRIDE` for the trainer's named streams (sampling, local
training, noise, ...) and per-round secure-aggregation seeds, `SALT_STRIDE` for one-off draws
(an attack's, an epoch's shuffle), each with its own salt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

STREAM_STRIDE = 1_000_003
SALT_STRIDE = 7919
TRAINER_STREAMS = ("sampling", "local", "noise", "dropout", "clip")


def derived_seed(seed: int, salt: int, stride: int = SALT_STRIDE) -> int:
    """The seed of stream `salt` of `seed`: `seed * stride + salt`.

    Args:
        seed: the spec's (or a run's) seed; salt: which stream; stride: SALT_STRIDE or
            STREAM_STRIDE.
    Returns:
        An integer seed, distinct for distinct salts below the stride.
    """
    return seed * stride + salt


def generator(seed: int, salt: int, stride: int = SALT_STRIDE) -> torch.Generator:
    """A torch generator seeded with `derived_seed(seed, salt, stride)`.

    Args:
        seed, salt, stride: as in `derived_seed`.
    """
    return torch.Generator().manual_seed(derived_seed(seed, salt, stride))


def rng_streams(seed: int, names: Sequence[str] = TRAINER_STREAMS, first: int = 1
                ) -> dict[str, torch.Generator]:
    """Named torch streams of `seed`: stream i of `names` has salt `first + i`.

    Args:
        seed: the seed; names: the streams (the trainer's by default); first: the first salt.
    Returns:
        {name: generator}.
    """
    return {n: generator(seed, first + i, STREAM_STRIDE) for i, n in enumerate(names)}
