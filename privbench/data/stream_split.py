"""A streamed data set's split into training, test and population clients (whole clients, by seed),
its reader from the spec, and its shape for the spec's checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from privbench.spec.schema import DataSpec

if TYPE_CHECKING:
    from privbench.data.shape import DataShape
    from privbench.data.streamed import StreamedClients

HELD_CLIENTS = 1_000  # most clients held out as the test set, the population, or scored members


@dataclass(frozen=True)
class StreamSplit:
    """Which of the file's clients train, which are the test set and which the population."""

    train: np.ndarray
    test: np.ndarray
    pop: np.ndarray


def stream_split(n_clients: int, data: DataSpec, seed: int) -> StreamSplit:
    """The file's clients split by seed into training, test and population clients.

    Args:
        n_clients: the file's clients; data: the spec's data table; seed: the split's seed.

    Returns:
        The split, each part's client ids sorted.
    """
    order = np.random.default_rng([seed, 0x57EA]).permutation(n_clients)
    n_test, n_pop = (min(HELD_CLIENTS, max(1, round(f * n_clients)))
                     for f in (data.test_fraction, data.population_fraction))
    return StreamSplit(np.sort(order[n_test + n_pop:]), np.sort(order[:n_test]),
                       np.sort(order[n_test: n_test + n_pop]))


def open_spec_stream(data: DataSpec) -> StreamedClients:
    """The spec's streamed file, every client (its index loaded or built once per file state)."""
    from privbench.data.streamed import open_stream
    from privbench.errors import PrivbenchError

    if not data.path:
        raise PrivbenchError("data.path: missing; data.name = 'stream' reads your Parquet or "
                             "JSONL file; set data.path")
    return open_stream(data.path, data.format, data.label, data.client, data.features)


def stream_shape(data: DataSpec) -> DataShape:
    """What the spec's checks need of a streamed file, from its index (no record is read)."""
    from privbench.data.shape import DataShape

    index = open_spec_stream(data).index
    split = stream_split(index.n_clients, data, 0)  # seed 0's split: another seed holds out
    # other clients, so its record counts differ by theirs (the client counts do not)
    return DataShape(Path(data.path or "").name, int(index.counts[split.train].sum()),
                     int(index.counts[split.pop].sum()), len(index.features),
                     len(index.label_names), index.n_clients)
