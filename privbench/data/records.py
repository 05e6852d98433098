"""A user's records as read from their files: features, labels and client ids, and the encoding of
text labels into class indices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Records:
    """A user's records, before the train / test / population split.

    Attributes:
        x: features (float32), one row a record (images: grey-scale pixels in [0, 1], flat).
        y: labels, 0..len(label_names)-1.
        clients: each record's client, 0..len(client_names)-1, or None (partitioned as usual).
        label_names: the label values as the files spell them, in label order.
        client_names: the client ids as the files spell them, in client order.
        image_shape: (height, width) of an image data set, else None.
    """

    x: np.ndarray
    y: np.ndarray
    clients: np.ndarray | None
    label_names: tuple[str, ...]
    client_names: tuple[str, ...] = ()
    image_shape: tuple[int, int] | None = None


def encode(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer codes of `values` (strings) in a stable order: numeric order when every value is a
    number ("2" before "10"), else text order.

    Args:
        values: one string a record.

    Returns:
        (codes int64, the distinct values in code order).
    """
    names, inverse = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    try:
        order = np.argsort([float(v) for v in names], kind="stable")
    except ValueError:
        order = np.arange(len(names))
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    return rank[inverse.reshape(-1)], tuple(str(v) for v in names[order])
