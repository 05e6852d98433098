"""Write a federation as a streamed data set's file: Parquet (sorted by client, small row groups)
or JSONL (one {"client", "label", "f0".."f31"} object a line, clients together).

`FederationWriter` writes records with their clients; `write_generated` writes the seeded
generated federation of privbench/data/federation_gen.py (client c's records depend only on the seed
and c), a cohort of clients at a time, so a 100,000-client file is written with the memory of a
few thousand clients. Either file reads back with `data.name = "stream"`, `data.client =
"client"`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROW_GROUP_ROWS = 1_024  # Parquet rows a row group: a cohort client's read decodes one or two
WRITE_CLIENTS = 2_000  # generated clients written at a time


def _columns(x: np.ndarray) -> list[str]:
    return [f"f{i}" for i in range(x.shape[1])]


class FederationWriter:
    """Writes records, sorted by client, to a Parquet or JSONL file (by its suffix), a part at a
    time; use it as a context manager (the file is complete when it closes).

    Args:
        path: the file (.parquet or .jsonl).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.jsonl = self.path.suffix == ".jsonl"
        self._parquet = None
        if self.jsonl:
            self.path.write_text("")

    def write(self, x: np.ndarray, y: np.ndarray, clients: np.ndarray) -> None:
        """Append records: x (N, F) features, y (N,) labels, clients (N,) ids, each client's
        records together and after the clients of earlier parts.

        Args:
            x, y, clients: the part's features (N, F), labels (N,) and client ids (N,).
        """
        if self.jsonl:
            names = _columns(x)
            with open(self.path, "a") as f:
                for xi, yi, ci in zip(x.tolist(), y.tolist(), clients.tolist(), strict=True):
                    f.write(json.dumps({"client": int(ci), "label": int(yi),
                                        **dict(zip(names, xi, strict=True))}) + "\n")
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"client": clients.astype(np.int64), "label": y.astype(np.int64),
                          **{n: x[:, i].astype(np.float32) for i, n in enumerate(_columns(x))}})
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(str(self.path), table.schema)
        self._parquet.write_table(table, row_group_size=ROW_GROUP_ROWS)

    def __enter__(self) -> FederationWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._parquet is not None:
            self._parquet.close()


def write_generated(path: Path, n_clients: int, seed: int) -> int:
    """Write the generated federation of `n_clients` clients (privbench/data/federation_gen.py).

    Args:
        path: the file (.parquet or .jsonl); n_clients: clients; seed: the data set's seed.

    Returns:
        The records written.
    """
    from privbench.data.federation_gen import _centres, client_counts, client_records

    counts, centres = client_counts(n_clients, seed), _centres(seed)
    total = 0
    with FederationWriter(path) as writer:
        for lo in range(0, n_clients, WRITE_CLIENTS):
            ids = range(lo, min(n_clients, lo + WRITE_CLIENTS))
            parts = [client_records(c, int(counts[c]), seed, centres) for c in ids]
            cid = np.repeat(np.fromiter(ids, np.int64), counts[lo: lo + len(parts)])
            writer.write(np.concatenate([p[0] for p in parts]),
                         np.concatenate([p[1] for p in parts]), cid)
            total += len(cid)
    return total
