"""JSONL records of a streamed data set: one {"client": ..., "label": ..., feature: number, ...}
object a line, checked as they are indexed (privbench/data/stream_index.py) and read back a client
at
a time from its byte offset.

Every problem is one line naming the file, the line (1-based), the key and the fix: a line that is
not a JSON object, a missing key, an empty client id or label, a feature that is not a finite
number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from privbench.errors import PrivbenchError

BATCH_LINES = 65_536  # lines checked at a time while indexing


def _parse(raw: bytes, name: str, line_no: int) -> dict:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise PrivbenchError(f"data.path: {name} line {line_no}: not a JSON object ({e}); write "
                             "one {\"client\", \"label\", feature...} object a line") from None
    if not isinstance(obj, dict):
        raise PrivbenchError(f"data.path: {name} line {line_no}: not a JSON object; write one "
                             "{\"client\", \"label\", feature...} object a line")
    return obj


def _value(obj: dict, key: str, field: str, name: str, line_no: int) -> str:
    if key not in obj:
        raise PrivbenchError(f"{field} = {key!r}: {name} line {line_no} has no key {key!r}; its "
                             f"keys are {', '.join(map(repr, obj))}")
    v = obj[key]
    if v is None or str(v).strip() == "":
        raise PrivbenchError(f"data.path: {name} line {line_no}, key {key!r}: empty; every "
                             "record needs a value there")
    return str(v)


def _number(obj: dict, key: str, name: str, line_no: int) -> float:
    if key not in obj:
        raise PrivbenchError(f"data.features: {name} line {line_no} has no key {key!r}; give "
                             "every record every feature")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise PrivbenchError(f"data.path: {name} line {line_no}, key {key!r}: {v!r} is not a "
                             "finite number; make every feature numeric, or list the numeric "
                             "ones in data.features")
    return float(v)


def scan_jsonl(path: Path, label: str, client: str, features: list[str]
               ) -> tuple[list[str], Iterator[tuple[np.ndarray, ...]]]:
    """The feature keys of a JSONL file and its records in batches, each checked.

    Args:
        path: the file; label, client: the label and client keys; features: the feature keys
            (empty: every key of the first line but the label and client ones).

    Returns:
        (feature keys, batches of (client ids, labels, byte offsets, byte lengths)).
    """
    with open(path, "rb") as f:
        first = f.readline()
    if not first.strip():
        raise PrivbenchError(f"data.path: {path.name} has no records; write one JSON object a "
                             "line")
    from privbench.data.tabular_files import _feature_columns  # the first line's keys as columns

    chosen = _feature_columns(path.name, list(_parse(first, path.name, 1)), label, client,
                              list(features))[2:]

    def batches() -> Iterator[tuple[np.ndarray, ...]]:
        ids, labels, offsets, lengths = [], [], [], []
        offset = 0
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if raw.strip():
                    obj = _parse(raw, path.name, line_no)
                    ids.append(_value(obj, client, "data.client", path.name, line_no))
                    labels.append(_value(obj, label, "data.label", path.name, line_no))
                    for key in chosen:
                        _number(obj, key, path.name, line_no)
                    offsets.append(offset)
                    lengths.append(len(raw))
                offset += len(raw)
                if len(ids) >= BATCH_LINES:
                    yield _batch(ids, labels, offsets, lengths)
                    ids, labels, offsets, lengths = [], [], [], []
        if ids:
            yield _batch(ids, labels, offsets, lengths)

    return chosen, batches()


def _batch(ids: list, labels: list, offsets: list, lengths: list) -> tuple[np.ndarray, ...]:
    return (np.asarray(ids, dtype=str), np.asarray(labels, dtype=str),
            np.asarray(offsets, dtype=np.int64), np.asarray(lengths, dtype=np.int64))


def read_client_lines(f, start: int, nbytes: int, label: str, features: tuple[str, ...]
                      ) -> tuple[np.ndarray, list[str]]:
    """One client's records from its byte range of an open JSONL file (indexed and checked).

    Args:
        f: the file, opened "rb"; start, nbytes: the client's byte range (its index entry).
        label: the label key; features: the feature keys.

    Returns:
        (features (count, len(features)) float32, the label values as strings).
    """
    f.seek(start)
    objs = [json.loads(line) for line in f.read(nbytes).splitlines() if line.strip()]
    x = np.array([[float(o[k]) for k in features] for o in objs], dtype=np.float32)
    return x.reshape(len(objs), len(features)), [str(o[label]) for o in objs]
