"""A user's own data files: read once per file state, checked before any cell starts, hashed into
the cells' content hash.

`data.name = "table"` (CSV or Parquet, privbench/data/tabular_files.py) and `"images"` (an image
folder, privbench/data/image_folders.py) give the same `Records`: a feature matrix, integer labels
and,
where the files name them, each record's client. `read_records` caches them by the file's (or the
folder listing's) names, sizes and modification times, so checking every cell of a suite reads the
data once, and an edited file is read again. `data_sha256` is what enters a cell's content hash:
editing the data makes a new cell instead of reusing a cached result.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from privbench.data.records import Records
from privbench.errors import PrivbenchError

if TYPE_CHECKING:
    from privbench.spec.schema import DataSpec


def path_state(path: Path) -> tuple:
    """What identifies a file's or folder's contents cheaply: (relative name, size, mtime_ns) of
    the file, or of every file under the folder, sorted; () when the path does not exist."""
    if path.is_file():
        st = path.stat()
        return ((path.name, st.st_size, st.st_mtime_ns),)
    if not path.is_dir():
        return ()
    out = []
    for f in sorted(path.rglob("*")):
        if f.is_file():
            st = f.stat()
            out.append((str(f.relative_to(path)), st.st_size, st.st_mtime_ns))
    return tuple(out)


def data_sha256(path: Path) -> str | None:
    """The content hash of a user's data: the sha256 of a file's bytes, or of a folder's listing
    (names, sizes, modification times); None when the path does not exist. Computed once per
    file state."""
    state = path_state(path)
    return _sha256(str(path), state) if state else None


@functools.lru_cache(maxsize=64)
def _sha256(path: str, state: tuple) -> str:
    p = Path(path)
    if not p.is_file():  # a folder: its listing
        return hashlib.sha256(json.dumps(state).encode()).hexdigest()
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return hashlib.sha256(json.dumps([state[0][1], h.hexdigest()]).encode()).hexdigest()


def read_records(data: DataSpec) -> Records:
    """The records of a user's table or image folder, read once per file state.

    Args:
        data: the spec's data table (name "table" or "images", with data.path).

    Returns:
        The records. Raises PrivbenchError, one line naming the file, row and column (or image)
        and the fix, when the files cannot be read as the spec says.
    """
    if not data.path:
        raise PrivbenchError(f"data.path: missing; data.name = {data.name!r} reads your "
                             + ("CSV or Parquet file" if data.name == "table"
                                else "image folder") + "; set data.path")
    path = Path(data.path)
    if data.name == "table" and not path.is_file():
        raise PrivbenchError(f"data.path = {data.path!r}: no such file; give a CSV or Parquet "
                             "file")
    if data.name == "images" and not path.is_dir():
        raise PrivbenchError(f"data.path = {data.path!r}: not a folder; give a folder with one "
                             "folder of images per class")
    options = (data.format, data.label, data.client, tuple(data.features), data.image_size)
    records = _cached_records(data.name, str(path), options, path_state(path))
    if isinstance(records, str):
        raise PrivbenchError(records)
    return records


@functools.lru_cache(maxsize=4)
def _cached_records(name: str, path: str, options: tuple, _state: tuple) -> Records | str:
    """The records, or the one-line problem (cached too: a bad file is read once)."""
    fmt, label, client, features, image_size = options
    try:
        if name == "table":
            from privbench.data.tabular_files import read_table

            return read_table(Path(path), fmt, label, client, list(features))
        from privbench.data.image_folders import read_image_folder

        return read_image_folder(Path(path), image_size)
    except PrivbenchError as e:
        return str(e)

