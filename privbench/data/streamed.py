"""A federation streamed from a Parquet or JSONL file: each round reads only the sampled cohort's
records, so memory grows with the cohort, not the population.

`StreamedClients` holds the client index (privbench/data/stream_index.py: 24 bytes a client) and has
what the federated loop reads of `ClientData` (`n_clients`, `counts`, `n_max`, `rows`), as
`privbench.data.federation_gen.GeneratedClients` does. `rows(idx)` reads the clients `idx`: from a
Parquet file, only the row groups that hold them, one at a time (a file sorted by client with
small row groups reads little more than the cohort); from a JSONL file, each client's byte range.
The records are zero-padded to the population's largest count exactly as
`trainers.client_data.from_shards` pads them, so training on a streamed file equals training on
the same records held in memory, bit for bit.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from privbench.data.federation_gen import CohortClients
from privbench.data.stream_index import ClientIndex

if TYPE_CHECKING:
    from privbench.trainers.client_data import ClientData


class StreamedClients(CohortClients):
    """The clients `ids` of a streamed file (all of them when None), read a cohort at a time.

    Row `i` of this federation is the file's client `ids[i]` (in the index's client order).

    Args:
        index: the file's client index.
        ids: which of the index's clients, in row order (None: every client).
    """

    def __init__(self, index: ClientIndex, ids: np.ndarray | None = None) -> None:
        self.index = index
        self.ids = np.arange(index.n_clients) if ids is None else np.asarray(ids, np.int64)
        super().__init__(index.counts[self.ids])
        self._labels = {v: i for i, v in enumerate(index.label_names)}
        self._file = None  # Parquet: the open file, and each row group's first row
        self._groups = np.zeros(1, np.int64)
        self.reads = 0  # records read so far (what the cohorts cost)

    @property
    def n_features(self) -> int:
        """The number of feature columns in the file."""
        return len(self.index.features)

    def rows(self, idx: torch.Tensor) -> ClientData:
        """The clients `idx` (rows of this federation), read now, zero-padded to `n_max`."""
        from privbench.trainers.client_data import ClientData

        x, y = self.records(idx)
        xs = torch.zeros((len(idx), self.n_max, self.n_features), dtype=torch.float32)
        ys = torch.zeros((len(idx), self.n_max), dtype=torch.long)
        for row, (xc, yc) in enumerate(zip(x, y, strict=True)):
            xs[row, : len(yc)] = torch.from_numpy(xc)
            ys[row, : len(yc)] = torch.from_numpy(yc)
        return ClientData({"x": xs, "y": ys}, self.counts[idx])

    def records(self, idx: torch.Tensor | np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each of the clients `idx`'s records: features (count, n_features) float32 and labels
        (count,) int64, one pair a client, in `idx` order."""
        clients = self.ids[np.asarray(idx, dtype=np.int64)]
        read = self._parquet if self.index.fmt == "parquet" else self._jsonl
        x, y = read(clients)
        self.reads += sum(len(v) for v in y)
        return x, y

    def _jsonl(self, clients: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        from privbench.data.stream_jsonl import read_client_lines

        ix = self.index
        xs, ys = [], []
        with open(ix.path, "rb") as f:
            for c in clients.tolist():
                x, y = read_client_lines(f, int(ix.starts[c]), int(ix.nbytes[c]), ix.label,
                                         ix.features)
                xs.append(x)
                ys.append(np.array([self._labels[v] for v in y], dtype=np.int64))
        return xs, ys

    def _parquet(self, clients: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        ix = self.index
        pf = self._parquet_file()
        groups = self._groups
        # (row group) -> [(position in clients, offset in the client, first row in the group, n)]
        parts: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
        for pos, c in enumerate(clients.tolist()):
            row, end = int(ix.starts[c]), int(ix.starts[c] + ix.counts[c])
            while row < end:
                g = int(np.searchsorted(groups, row, side="right") - 1)
                n = min(end, int(groups[g + 1])) - row
                parts[g].append((pos, row - int(ix.starts[c]), row - int(groups[g]), n))
                row += n
        xs = [np.zeros((int(ix.counts[c]), len(ix.features)), np.float32) for c in clients]
        ys = [np.zeros(int(ix.counts[c]), np.int64) for c in clients]
        for g in sorted(parts):  # one row group in memory at a time, only its cohort rows kept
            take = np.concatenate([np.arange(first, first + n) for _, _, first, n in parts[g]])
            table = pf.read_row_group(g, columns=[ix.label, *ix.features],
                                      use_threads=False).take(take)
            feats = np.column_stack([table.column(name).to_numpy().astype(np.float64)
                                     for name in ix.features]).astype(np.float32)
            labels = self._codes(table.column(ix.label))
            at = 0
            for pos, off, _, n in parts[g]:
                xs[pos][off: off + n] = feats[at: at + n]
                ys[pos][off: off + n] = labels[at: at + n]
                at += n
        return xs, ys

    def _parquet_file(self):  # -> pyarrow.parquet.ParquetFile, opened once
        import pyarrow.parquet as pq

        if self._file is None:
            self._file = pq.ParquetFile(self.index.path)
            sizes = [self._file.metadata.row_group(g).num_rows
                     for g in range(self._file.num_row_groups)]
            self._groups = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        return self._file

    def _codes(self, column) -> np.ndarray:
        """Label codes of an Arrow column: integer labels mapped through their distinct values,
        anything else by its text (as the index spelled the labels)."""
        import pyarrow as pa

        if pa.types.is_integer(column.type):
            values, inverse = np.unique(column.to_numpy(), return_inverse=True)
            return np.array([self._labels[str(v)] for v in values.tolist()],
                            dtype=np.int64)[inverse.reshape(-1)]
        return np.array([self._labels[v] for v in column.to_pandas().astype(str)],
                        dtype=np.int64)

    def gather(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The clients `idx`'s records as flat arrays (features, labels), clients in order."""
        x, y = self.records(idx)
        if not x:
            return np.zeros((0, self.n_features), np.float32), np.zeros(0, np.int64)
        return np.concatenate(x), np.concatenate(y)


def open_stream(path: str | Path, fmt: str, label: str, client: str | None,
                features: list[str]) -> StreamedClients:
    """Every client of a streamed file, its index loaded or built (privbench/data/stream_index.py).

    Args:
        path: the Parquet or JSONL file; fmt: data.format; label, client, features: the
            columns, as the spec names them.

    Returns:
        The streamed federation. Raises a one-line PrivbenchError for a missing file, column or
        client id (privbench.data.stream_index.client_index).
    """
    from privbench.data.stream_index import client_index

    return StreamedClients(client_index(Path(path), fmt, label, client, list(features)))
