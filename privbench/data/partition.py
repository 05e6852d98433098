"""Federated partitioning: records split among clients, IID or with Dirichlet label skew."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privbench.spec.schema import DataSpec


@dataclass(frozen=True)
class ClientShard:
    """One client's records: indices into the training set."""

    id: int
    indices: np.ndarray


def partition_iid(n_records: int, n_clients: int,
                  rng: np.random.Generator) -> list[ClientShard]:
    """Shuffle and deal records into clients of (near) equal size.

    Args:
        n_records: the training records; n_clients: data.clients; rng: the partition's stream.
    Returns:
        One ClientShard per client, its record indices sorted.
    """
    if n_clients > n_records:
        raise ValueError(f"data.clients = {n_clients}: more clients than training records "
                         f"({n_records}); lower data.clients")
    order = rng.permutation(n_records)
    parts = np.array_split(order, n_clients)
    return [ClientShard(i, np.sort(part)) for i, part in enumerate(parts)]


def partition_dirichlet(labels: np.ndarray, n_clients: int, alpha: float,
                        rng: np.random.Generator) -> list[ClientShard]:
    """Label skew: each class is spread over clients in Dirichlet(alpha) proportions.

    Small alpha gives each client few classes. Every client gets at least one record: empty
    clients take a record from the largest client, so the client count is what the spec says.

    Args:
        labels: the training labels (N,); n_clients: data.clients; alpha: the concentration;
        rng: the partition's stream.
    Returns:
        One ClientShard per client, its record indices sorted.
    """
    n = len(labels)
    if n_clients > n:
        raise ValueError(f"data.clients = {n_clients}: more clients than training records ({n}); "
                         "lower data.clients")
    buckets: list[list[int]] = [[] for _ in range(n_clients)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        props = rng.dirichlet(np.full(n_clients, alpha))
        cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
        for client, part in enumerate(np.split(idx, cuts)):
            buckets[client].extend(part.tolist())
    for client in range(n_clients):
        if not buckets[client]:
            donor = max(range(n_clients), key=lambda c: len(buckets[c]))
            buckets[client].append(buckets[donor].pop())
    return [ClientShard(i, np.sort(np.asarray(b, dtype=np.int64))) for i, b in enumerate(buckets)]


def partition(spec: DataSpec, labels: np.ndarray, seed: int,
              clients: np.ndarray | None = None) -> list[ClientShard]:
    """Partition the training set as the spec says, deterministically in the seed.

    Args:
        spec: the spec's data table (clients, partition, dirichlet_alpha).
        labels: the training labels.
        seed: the partition's seed.
        clients: each training record's client (0..k-1), when the user's data names them: then
            client i holds exactly its records and the spec's partition is not drawn.

    Returns:
        One shard per client, in client order.
    """
    if clients is not None:
        return [ClientShard(i, np.flatnonzero(clients == i))
                for i in range(int(clients.max()) + 1 if len(clients) else 0)]
    rng = np.random.default_rng([seed, 0x5EED])
    if spec.partition == "iid":
        return partition_iid(len(labels), spec.clients, rng)
    return partition_dirichlet(labels, spec.clients, spec.dirichlet_alpha, rng)
