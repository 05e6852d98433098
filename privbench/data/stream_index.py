"""The client index of a streamed data set: where each client's records lie in a Parquet or JSONL
file too large to hold in memory, built by one pass over the file and stored hashed in JSON.

A streamed file (`data.name = "stream"`) names each record's client in the `data.client` column
(Parquet) or key (JSONL, one {"client", "label", feature...} object a line), and holds each
client's records together, one run of rows or lines (sort the file by client id). The one pass
reads the file in row-group batches (Parquet) or line by line (JSONL), checks every record as it
goes (every problem one line naming the file, row or line, column and fix) and records, for each
client, its first row (Parquet) or byte offset (JSONL), its byte length and its record count, and
the label values. The index is stored as JSON under $PRIVBENCH_CACHE/stream-index/, named by the
SHA-256 of the file and the reading options, with the SHA-256 of its own content: a file edited
since gets a new index, and an index whose content no longer matches its hash is rebuilt.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from privbench.data.records import encode
from privbench.data.user_data import data_sha256, path_state
from privbench.errors import PrivbenchError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}
VERSION = 1
MAX_GROUP_ROWS = 65_536  # rows of a Parquet row group: a cohort reads whole row groups


@dataclass(frozen=True)
class ClientIndex:
    """Where each client's records lie, clients in `encode` order of their ids.

    Attributes:
        path: the file; fmt: "parquet" or "jsonl".
        label, client: the label and client columns (keys); features: the feature columns.
        client_names: the client ids as the file spells them (str array); label_names: the
            label values.
        starts: each client's first row (Parquet) or byte offset (JSONL); counts: its records;
        nbytes: its bytes (JSONL; zeros for Parquet).
    """

    path: str
    fmt: str
    label: str
    client: str
    features: tuple[str, ...]
    client_names: np.ndarray
    label_names: tuple[str, ...]
    starts: np.ndarray
    counts: np.ndarray
    nbytes: np.ndarray

    @property
    def n_clients(self) -> int:
        """The number of clients in the file."""
        return len(self.client_names)


def stream_format(path: Path, fmt: str) -> str:
    """"parquet" or "jsonl": data.format when set, else the file's suffix says.

    Args:
        path: the data file; fmt: data.format ("auto" or "parquet"; JSONL only by suffix).
    Raises:
        PrivbenchError: one line naming data.format when the suffix is not .parquet, .pq, .jsonl.
    """
    if fmt == "parquet":
        return fmt
    if fmt != "auto" or path.suffix.lower() not in FORMATS:
        raise PrivbenchError(f"data.format = {fmt!r}: data.name = 'stream' reads a Parquet or "
                             f"JSONL file, and {path.name} is neither by its suffix; name it "
                             ".parquet or .jsonl")
    return FORMATS[path.suffix.lower()]


def client_index(path: Path, fmt: str, label: str, client: str | None,
                 features: list[str]) -> ClientIndex:
    """The client index of a streamed file: loaded from its stored JSON, else built and stored.

    Args:
        path: the Parquet or JSONL file; fmt: "auto" or "parquet" (data.format).
        label: the label column; client: the client-id column (required);
        features: the feature columns (empty: every column but the label and client ones).

    Returns:
        The index. Raises PrivbenchError (one line: the file, row or line, column and fix) when
        the file is missing, lacks a column or key, or a record is not as the spec says.
    """
    if client is None:
        raise PrivbenchError("data.client: missing; data.name = 'stream' reads each record's "
                             "client from a column; set data.client to its name")
    if not path.is_file():
        raise PrivbenchError(f"data.path = {str(path)!r}: no such file; give a Parquet or JSONL "
                             "file")
    options = (stream_format(path, fmt), label, client, tuple(features))
    index = _cached(str(path), options, path_state(path))
    if isinstance(index, str):
        raise PrivbenchError(index)
    return index


@functools.lru_cache(maxsize=4)
def _cached(path: str, options: tuple, _state: tuple) -> ClientIndex | str:
    """The index or the one-line problem (cached too: a bad file is read once per state)."""
    fmt, label, client, features = options
    name = hashlib.sha256(json.dumps([VERSION, data_sha256(Path(path)), *options[:3],
                                      list(features)]).encode()).hexdigest()
    stored = _index_dir() / f"{name}.json"
    if (payload := _load(stored)) is None:
        try:
            scan = _scan_parquet if fmt == "parquet" else _scan_jsonl
            payload = _payload(Path(path), fmt, label, client, list(features), scan)
        except PrivbenchError as e:
            return str(e)
        _store(stored, payload)
    return ClientIndex(path, fmt, label, client, tuple(payload["features"]),
                       np.asarray(payload["clients"], dtype=str), tuple(payload["labels"]),
                       *(_ints(payload[k]) for k in ("starts", "counts", "nbytes")))


def _ints(text: str) -> np.ndarray:
    """An int64 array stored as base64 of its little-endian bytes (no Python int a client)."""
    return np.frombuffer(base64.b64decode(text), dtype="<i8").astype(np.int64)


def _text(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype="<i8").tobytes()).decode()


def _index_dir() -> Path:
    return Path(os.environ.get("PRIVBENCH_CACHE", Path.home() / ".cache" / "privbench")) \
        / "stream-index"


def _load(stored: Path) -> dict | None:
    try:
        doc = json.loads(stored.read_text())
        text = json.dumps(doc["index"], sort_keys=True)
        return doc["index"] if hashlib.sha256(text.encode()).hexdigest() == doc["sha256"] \
            else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(stored: Path, payload: dict) -> None:
    text = json.dumps(payload, sort_keys=True)
    stored.parent.mkdir(parents=True, exist_ok=True)
    tmp = stored.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"sha256": hashlib.sha256(text.encode()).hexdigest(),
                               "index": payload}))
    os.replace(tmp, stored)


def _payload(path: Path, fmt: str, label: str, client: str, features: list[str],
             scan) -> dict:
    """The index's JSON content. `scan` gives the feature columns and batches of (client ids,
    labels, byte offsets, byte lengths), checking every record's features as it reads; each
    batch is reduced to its runs of one client at once, so indexing holds one batch of records
    and a few numbers a client."""
    columns, batches = scan(path, label, client, features)
    run_ids: list[np.ndarray] = []
    run_first, run_start, run_end = [], [], []  # first record, first byte, end byte of a run
    label_values: set[str] = set()
    prev: tuple[object, np.ndarray, int] | None = None
    n = 0
    for cid, lab, off, length in batches:
        label_values.update(str(v) for v in pd.unique(lab))  # hashed: no sort of every label
        first = np.flatnonzero(np.r_[True, cid[1:] != cid[:-1]])
        last = np.r_[first[1:], len(cid)] - 1
        if prev is not None and prev[0] == cid[0]:  # the last batch's last client goes on
            prev[1][prev[2]] = off[last[0]] + length[last[0]]
            first, last = first[1:], last[1:]
        run_ids.append(cid[first])  # as the file types them: integers stay integers
        run_first.append(first + n)
        run_start.append(off[first])
        run_end.append(off[last] + length[last])
        if len(first):  # the batch's last run: (its id, its end bytes, where in them)
            prev = (run_ids[-1][-1], run_end[-1], len(first) - 1)
        n += len(cid)
    if not n:
        raise PrivbenchError(f"data.path: {path.name} has no records; add one record a row")
    ids, first = np.concatenate(run_ids), np.concatenate(run_first)
    if np.issubdtype(ids.dtype, np.integer):  # numeric order, as `encode` orders numbers
        order = np.argsort(ids, kind="stable")
        client_names = [str(v) for v in ids[order].tolist()]
    else:
        codes, client_names = encode(ids)
        order = np.argsort(codes, kind="stable")
    if (same := ids[order][1:] == ids[order][:-1]).any():
        again = ids[order][np.argmax(same)]
        gap = int(first[np.flatnonzero(ids == again)[1]])
        raise PrivbenchError(f"data.client = {client!r}: client {str(again)!r} of {path.name} "
                             f"appears again at {_where(fmt, gap)} after other clients; sort the "
                             f"file by {client!r} so each client's records are together")
    counts = np.r_[first[1:], n] - first
    _, label_names = encode(np.array(sorted(label_values)))
    if len(label_names) < 2:
        raise PrivbenchError(f"data.label = {label!r}: {path.name} has one class "
                             f"({label_names[0]!r}); a classifier needs at least 2")
    start, end = np.concatenate(run_start), np.concatenate(run_end)
    starts = first if fmt == "parquet" else start
    nbytes = np.zeros(len(first), np.int64) if fmt == "parquet" else end - start
    return {"features": columns, "clients": list(client_names), "labels": list(label_names),
            "starts": _text(starts[order]), "counts": _text(counts[order]),
            "nbytes": _text(nbytes[order])}


def _where(fmt: str, i: int) -> str:
    return f"row {i + 1}" if fmt == "parquet" else f"line {i + 1}"


def _columns(name: str, columns: list[str], label: str, client: str,
             features: list[str]) -> list[str]:
    from privbench.data.tabular_files import _feature_columns

    return _feature_columns(name, columns, label, client, features)[2:]


def _scan_parquet(path: Path, label: str, client: str, features: list[str]):
    """The feature columns and the checked records, a row group at a time (each read whole:
    reading ahead in batches would hold several row groups at once)."""
    from privbench.data.tabular_files import _numbers, _parquet_file

    pf = _parquet_file(path)
    chosen = _columns(path.name, list(pf.schema_arrow.names), label, client, features)
    sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
    if sizes and max(sizes) > MAX_GROUP_ROWS:
        big = int(np.argmax(sizes))
        raise PrivbenchError(f"data.path: {path.name} row group {big} holds {sizes[big]:,} rows; "
                             "each cohort reads whole row groups, so write the file with row "
                             f"groups of at most {MAX_GROUP_ROWS:,} rows "
                             "(df.to_parquet(path, row_group_size=4096))")

    def batches() -> Iterator[tuple[np.ndarray, ...]]:
        start = 0
        for g in range(pf.num_row_groups):
            table = pf.read_row_group(g, columns=[label, client, *chosen], use_threads=False)
            for c in chosen:  # the per-value check (and its message) only where one fails
                if not _all_finite(table.column(c)):
                    _numbers(table.column(c).to_pandas(), path.name, c, start, "parquet")
            empty = np.zeros(table.num_rows, dtype=np.int64)
            yield (_ids_of(table.column(client), path.name, client, start),
                   _ids_of(table.column(label), path.name, label, start), empty, empty)
            start += table.num_rows

    return chosen, batches()


def _all_finite(column) -> bool:
    """Whether an Arrow column holds only finite numbers (no nulls)."""
    import pyarrow as pa

    t = column.type
    if column.null_count or not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        return False
    return bool(np.isfinite(column.to_numpy().astype(np.float64)).all())


def _ids_of(column, name: str, key: str, start: int) -> np.ndarray:
    """A client or label column's values: integers as they are, anything else as checked
    strings (an empty value is a one-line error)."""
    import pyarrow as pa

    if pa.types.is_integer(column.type) and not column.null_count:
        return column.to_numpy()
    from privbench.data.tabular_files import _ids

    return _ids(column.to_pandas(), name, key, start, "parquet")


def _scan_jsonl(path: Path, label: str, client: str, features: list[str]):
    from privbench.data.stream_jsonl import scan_jsonl

    return scan_jsonl(path, label, client, features)
