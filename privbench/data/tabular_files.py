"""A user's table, CSV or Parquet: numeric feature columns, a label column and optionally a
client-id column, read in chunks (CSV) or row-group batches (Parquet) and checked as it is read.

Every problem is one line that names the file, the line (CSV, counting the header as line 1) or
row (Parquet), the column and the fix: a missing column, a value that is not a number, an empty
label, an empty file, Parquet without pyarrow.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from privbench.data.records import Records, encode
from privbench.errors import PrivbenchError

CHUNK_ROWS = 65_536  # records read at a time: a large file never sits in memory as text
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def table_format(path: Path, fmt: str) -> str:
    """"csv" or "parquet": `fmt` unless it is "auto", else the file's suffix says.

    Args:
        path: the data file; fmt: data.format ("auto", "csv" or "parquet").
    Raises:
        PrivbenchError: one line naming data.format when the suffix is not .csv, .parquet, .pq.
    """
    if fmt != "auto":
        return fmt
    if path.suffix.lower() not in SUFFIXES:
        raise PrivbenchError(f"data.format = 'auto': cannot tell the format of {path.name} from "
                             "its suffix; name it .csv or .parquet, or set data.format = 'csv' "
                             "or 'parquet'")
    return SUFFIXES[path.suffix.lower()]


def read_table(path: Path, fmt: str, label: str, client: str | None,
               features: list[str]) -> Records:
    """Read and check a user's table.

    Args:
        path: the CSV or Parquet file.
        fmt: "auto", "csv" or "parquet".
        label: the label column (any values; each distinct value is a class).
        client: the client-id column, or None.
        features: the feature columns; empty: every column but the label and client columns.

    Returns:
        The records: float32 features, labels in `encode` order, clients when `client` is set.
    """
    fmt = table_format(path, fmt)
    if path.stat().st_size == 0:
        raise PrivbenchError(f"data.path: {path.name} is empty; write a header row and one row "
                             "a record")
    columns = _columns(path, fmt)
    if not columns:
        raise PrivbenchError(f"data.path: {path.name} has no columns; write a header row and one "
                             "row a record")
    wanted = _feature_columns(path.name, columns, label, client, features)
    chunks = _chunks_csv(path, wanted) if fmt == "csv" else _chunks_parquet(path, wanted)
    xs, ys, cs = [], [], []
    for start, frame in chunks:
        xs.append(np.column_stack([_numbers(frame[c], path.name, c, start, fmt)
                                   for c in wanted[2:]]).astype(np.float32))
        ys.append(_ids(frame[label], path.name, label, start, fmt))
        if client is not None:
            cs.append(_ids(frame[client], path.name, client, start, fmt))
    if not sum(len(part) for part in ys):
        raise PrivbenchError(f"data.path: {path.name} has a header but no rows; add one row a "
                             "record")
    y, label_names = encode(np.concatenate(ys))
    if len(label_names) < 2:
        raise PrivbenchError(f"data.label = {label!r}: {path.name} has one class "
                             f"({label_names[0]!r}); a classifier needs at least 2")
    clients, client_names = encode(np.concatenate(cs)) if cs else (None, ())
    return Records(np.concatenate(xs), y, clients, label_names, client_names)


def _columns(path: Path, fmt: str) -> list[str]:
    if fmt == "parquet":
        return list(_parquet_file(path).schema_arrow.names)
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except pd.errors.EmptyDataError:
        return []
    except (UnicodeDecodeError, pd.errors.ParserError) as e:
        raise _csv_error(path, e) from None


def _feature_columns(name: str, columns: list[str], label: str, client: str | None,
                     features: list[str]) -> list[str]:
    """[label, client or label, *features], every one checked to exist."""
    known = f"its columns are {', '.join(map(repr, columns))}"
    for field, col in (("data.label", label), ("data.client", client)):
        if col is not None and col not in columns:
            raise PrivbenchError(f"{field} = {col!r}: {name} has no column {col!r}; {known}")
    if missing := [c for c in features if c not in columns]:
        raise PrivbenchError(f"data.features: {name} has no column {missing[0]!r}; {known}")
    chosen = features or [c for c in columns if c not in (label, client)]
    if not chosen:
        raise PrivbenchError(f"data.features: {name} has no column besides the label and client "
                             "ones; add numeric feature columns")
    if clash := [c for c in chosen if c in (label, client)]:
        raise PrivbenchError(f"data.features: {clash[0]!r} is the label or client column; "
                             "leave it out of data.features")
    return [label, client or label, *chosen]


def _chunks_csv(path: Path, columns: list[str]) -> Iterator[tuple[int, pd.DataFrame]]:
    start = 0
    try:
        reader = pd.read_csv(path, usecols=sorted(set(columns)), dtype=str,
                             keep_default_na=False, chunksize=CHUNK_ROWS)
        for frame in reader:
            yield start, frame
            start += len(frame)
    except (UnicodeDecodeError, pd.errors.ParserError) as e:
        raise _csv_error(path, e) from None


def _csv_error(path: Path, e: Exception) -> PrivbenchError:
    if isinstance(e, UnicodeDecodeError):
        return PrivbenchError(f"data.path: {path.name}: not UTF-8 text (byte {e.start}); save it "
                              "as UTF-8 CSV")
    text = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return PrivbenchError(f"data.path: {path.name}: not valid CSV ({text}); give every line "
                          "as many fields as the header")


def _parquet_file(path: Path):  # -> pyarrow.parquet.ParquetFile
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise PrivbenchError(f"data.path: {path.name}: reading Parquet needs pyarrow; "
                             "pip install 'privbench[data]' (or pyarrow), or save the table as "
                             "CSV") from None
    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow.ArrowInvalid and kin: not a Parquet file
        raise PrivbenchError(f"data.path: {path.name}: not a Parquet file ({type(e).__name__}); "
                             "write it with pandas.DataFrame.to_parquet, or save it as CSV") \
            from None


def _chunks_parquet(path: Path, columns: list[str]) -> Iterator[tuple[int, pd.DataFrame]]:
    start = 0
    for batch in _parquet_file(path).iter_batches(batch_size=CHUNK_ROWS,
                                                  columns=sorted(set(columns))):
        frame = batch.to_pandas()
        yield start, frame
        start += len(frame)


def _where(start: int, i: int, fmt: str) -> str:
    return f"line {start + i + 2}" if fmt == "csv" else f"row {start + i + 1}"


def _numbers(series: pd.Series, name: str, column: str, start: int, fmt: str) -> np.ndarray:
    """A feature column as float64; the first value that is not a finite number is an error."""
    values = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raw = series.iloc[i]
        shown = "empty" if raw is None or (isinstance(raw, float) and np.isnan(raw)) \
            or raw == "" else f"{raw!r} is not a finite number"
        raise PrivbenchError(f"data.path: {name} {_where(start, i, fmt)}, column {column!r}: "
                             f"{shown}; make every feature column numeric, or list the numeric "
                             "ones in data.features")
    return values


def _ids(series: pd.Series, name: str, column: str, start: int, fmt: str) -> np.ndarray:
    """A label or client column as strings; an empty value is an error."""
    missing = series.isna().to_numpy() | (series.astype(str).str.strip() == "").to_numpy()
    if missing.any():
        i = int(np.argmax(missing))
        raise PrivbenchError(f"data.path: {name} {_where(start, i, fmt)}, column {column!r}: "
                             "empty; every record needs a value there")
    return series.astype(str).to_numpy()
