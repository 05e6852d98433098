"""Client data as the trainer sees it: one Batch dict padded to (clients, n_max, ...) plus counts.

Every model's data reaches the round loop in this one shape: a tabular or image classifier's
`{"x", "y"}`, a language model's `{"ids", "weights", "labels"}`. Clients hold different numbers of
records; rows past a client's count are padding, which every step weighs 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from privbench.data.partition import ClientShard
from privbench.models.adapter import Batch


@dataclass(frozen=True)
class ClientData:
    """K clients' records: `batch[name]` is (K, n_max, ...), `counts` (K,) the real records."""

    batch: Batch
    counts: torch.Tensor

    @property
    def n_clients(self) -> int:
        """The number of clients K."""
        return int(self.counts.numel())

    @property
    def n_max(self) -> int:
        """The padded records per client: the batch's second dimension."""
        return int(next(iter(self.batch.values())).shape[1])

    def rows(self, idx: torch.Tensor) -> ClientData:
        """The clients `idx` (a row may repeat: independent runs of one client)."""
        return ClientData({n: t[idx] for n, t in self.batch.items()}, self.counts[idx])

    def valid(self) -> torch.Tensor:
        """(K, n_max) mask of real records."""
        return torch.arange(self.n_max).unsqueeze(0) < self.counts.unsqueeze(1)


def gather(batch: Batch, idx: torch.Tensor) -> Batch:
    """Each row's records `idx` (K, b) of a client batch (K, n_max, ...): (K, b, ...).

    Args:
        batch: the clients' records (K, n_max, ...); idx: each row's record indices (K, b).
    """
    rows = torch.arange(idx.shape[0]).unsqueeze(1)
    return {n: t[rows, idx] for n, t in batch.items()}


def from_shards(x: np.ndarray, y: np.ndarray, shards: Sequence[ClientShard]) -> ClientData:
    """A classifier's client data `{"x": (K, n_max, ...), "y": (K, n_max)}`, zero-padded.

    Args:
        x, y: all records and labels; shards: each client's record indices.
    Returns:
        The padded client data.
    """
    counts = torch.tensor([len(s.indices) for s in shards])
    n_max = int(counts.max())
    xs = torch.zeros((len(shards), n_max, *x.shape[1:]), dtype=torch.float32)
    ys = torch.zeros((len(shards), n_max), dtype=torch.long)
    for i, s in enumerate(shards):
        xs[i, : len(s.indices)] = torch.from_numpy(x[s.indices])
        ys[i, : len(s.indices)] = torch.from_numpy(y[s.indices])
    return ClientData({"x": xs, "y": ys}, counts)


def from_examples(examples: Batch, clients: torch.Tensor, n_clients: int) -> ClientData:
    """Group flat examples (N, ...) by client id into client data (n_clients, n_max, ...).

    Padding repeats a client's first example (weighed 0), so that every row the model computes
    on is a real input (an all-padding text would give an all-masked attention row).

    Args:
        examples: name -> (N, ...) tensors; clients: (N,) client id of each example.
        n_clients: the number of clients (ids 0 .. n_clients - 1).
    Returns:
        The grouped client data.
    """
    lists = [torch.nonzero(clients == c).flatten() for c in range(n_clients)]
    counts = torch.tensor([len(x) for x in lists])
    n_max = max(1, int(counts.max()))
    rows = torch.zeros((n_clients, n_max), dtype=torch.long)
    for c, x in enumerate(lists):
        if len(x):
            rows[c, : len(x)] = x
            rows[c, len(x):] = x[0]
    return ClientData({n: t[rows] for n, t in examples.items()}, counts)
