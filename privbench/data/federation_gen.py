"""A generated, seeded federated data set of any size, and clients gathered a cohort at a time.

`synthetic_federation`: 10 classes of 32 features. Class centres are drawn once from the seed;
client `c` draws its own record count, its label mix (Dirichlet, alpha 0.5: label skew) and a
small feature shift (its "device"), then its records `x = centre[y] + shift + noise`, all from
client `c`'s own random stream. So a client's records depend only on the seed and
its id: never on which other clients exist or were gathered with it, and generating one client
costs the same at 100,000 clients as at 10. Client `c`'s stream is Philox keyed by (seed, c),
a counter-based generator made for many independent streams, cheap to start (~20 us).

`GeneratedClients` holds only the record counts (8 bytes a client) and gathers the sampled
cohort's records each round (`rows`), padded to the population's largest count exactly as
`trainers.client_data.from_shards` pads them, so training on it equals training on the
materialised `ClientData` bit for bit, with memory that grows with the cohort, not the
population (benchmarks/test_bench_population.py measures it at 1,000 to 100,000 clients).

`load_synthetic` is the registry's loader for suites (privbench/data/splits.py): `RECORDS` records
of
the first clients, split and partitioned like any built-in data set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # the trainers import privbench.data.splits, which imports this module's loader
    from privbench.trainers.client_data import ClientData

N_FEATURES = 32
N_CLASSES = 10
MEAN_RECORDS = 20  # records a client on average (1 + Poisson(19))
ALPHA = 0.5  # Dirichlet label skew of a client
SEPARATION = 0.5  # spread of the class centres (noise has unit variance): not separable
SHIFT = 0.3  # spread of a client's feature shift
RECORDS = 20_000  # records `load_synthetic` returns for suites
_STREAM = 0xFED


def client_counts(n_clients: int, seed: int, first: int = 0) -> np.ndarray:
    """Record counts of clients `first .. first + n_clients - 1` (each at least 1): one seeded
    stream, whose first draws do not depend on how many follow.

    Args:
        n_clients: how many clients.
        seed: the data set's seed.
        first: the first client's id.

    Returns:
        (n_clients,) int64 counts.
    """
    draws = np.random.default_rng([seed, _STREAM, 1]).poisson(MEAN_RECORDS - 1,
                                                               size=first + n_clients)
    return (1 + draws[first:]).astype(np.int64)


def _centres(seed: int) -> np.ndarray:
    return np.random.default_rng([seed, _STREAM, 0]).normal(
        scale=SEPARATION, size=(N_CLASSES, N_FEATURES))


def client_records(c: int, count: int, seed: int,
                   centres: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Client `c`'s records: features (count, 32) float32 and labels (count,) int64.

    Args:
        c: the client's id.
        count: its record count (`client_counts`).
        seed: the data set's seed.
        centres: the class centres (computed from the seed when None).

    Returns:
        (x, y).
    """
    centres = _centres(seed) if centres is None else centres
    rng = np.random.Generator(np.random.Philox(key=[seed % 2**64, int(c)]))  # client c's own
    mix = rng.dirichlet(np.full(N_CLASSES, ALPHA))
    y = np.minimum(np.searchsorted(np.cumsum(mix), rng.random(count), side="right"),
                   N_CLASSES - 1)
    shift = rng.normal(scale=SHIFT, size=N_FEATURES)
    x = centres[y] + shift + rng.normal(size=(count, N_FEATURES))
    return x.astype(np.float32), y.astype(np.int64)


class CohortClients:
    """What the federated loop reads of a population whose records are gathered a cohort at a
    time (`n_clients`, `counts`, `n_max`); a subclass gives `rows(idx)`.

    Args:
        counts: each client's record count.
    """

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int64))
        self._n_max = int(self.counts.max()) if len(counts) else 0

    @property
    def n_clients(self) -> int:
        """The number of clients in the population."""
        return int(self.counts.numel())

    @property
    def n_max(self) -> int:
        """The largest client's record count (0 without clients), the padded width."""
        return self._n_max


class GeneratedClients(CohortClients):
    """A population of generated clients, of which only the counts are held; `rows(idx)`
    generates the clients `idx` (a cohort) as padded `ClientData`.

    It has what the federated loop reads of `ClientData` (`n_clients`, `counts`, `n_max`,
    `rows`), so it goes wherever client data goes.

    Args:
        n_clients: the population size.
        seed: the data set's seed.
    """

    def __init__(self, n_clients: int, seed: int) -> None:
        self.seed = seed
        self._counts = client_counts(n_clients, seed)
        super().__init__(self._counts)
        self._centres = _centres(seed)

    def rows(self, idx: torch.Tensor) -> ClientData:
        """The clients `idx`, generated now, zero-padded to the population's `n_max`."""
        from privbench.trainers.client_data import ClientData

        n_max = self.n_max
        xs = torch.zeros((len(idx), n_max, N_FEATURES), dtype=torch.float32)
        ys = torch.zeros((len(idx), n_max), dtype=torch.long)
        for row, c in enumerate(idx.tolist()):
            x, y = client_records(c, int(self._counts[c]), self.seed, self._centres)
            xs[row, : len(y)] = torch.from_numpy(x)
            ys[row, : len(y)] = torch.from_numpy(y)
        return ClientData({"x": xs, "y": ys}, self.counts[idx])

    def held_out(self, n_clients: int) -> dict[str, torch.Tensor]:
        """Records of `n_clients` clients outside the population (ids after it): a public pool
        or test set no trained client holds."""
        counts = client_counts(n_clients, self.seed, first=self.n_clients)
        parts = [client_records(self.n_clients + i, int(n), self.seed, self._centres)
                 for i, n in enumerate(counts)]
        return {"x": torch.from_numpy(np.concatenate([p[0] for p in parts])),
                "y": torch.from_numpy(np.concatenate([p[1] for p in parts]))}


def load_synthetic() -> tuple[np.ndarray, np.ndarray]:
    """`RECORDS` records of the first generated clients (seed 0), for suites: features, labels."""
    xs, ys, c = [], [], 0
    centres = _centres(0)
    counts = client_counts(RECORDS, 0)  # more clients than needed: each has a record or more
    while sum(len(y) for y in ys) < RECORDS:
        x, y = client_records(c, int(counts[c]), 0, centres)
        xs.append(x)
        ys.append(y)
        c += 1
    return np.concatenate(xs)[:RECORDS], np.concatenate(ys)[:RECORDS]
