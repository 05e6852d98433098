"""What the spec's checks need to know of a data set before anything trains: its feature and class
counts and its size."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataShape:
    """What the spec's checks need to know of a data set before anything trains.

    Attributes:
        source: the data set's name in messages ("digits", or the user's file or folder name).
        n_train: training records; n_pop: population records.
        n_features: features of a record (flat); n_classes: classes.
        clients: the clients the user's records name, or None (partitioned into data.clients).
    """

    source: str
    n_train: int
    n_pop: int
    n_features: int
    n_classes: int
    clients: int | None = None
