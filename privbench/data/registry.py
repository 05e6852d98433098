"""The data-set registry: every data set privbench knows, its kind (tabular or text), its size,
and whether it is read from the user's `data.path` (a table, an image folder, a JSONL folder).

The spec's allowed `data.name` values, its size checks, the gates' "delta at most 1/n" and
`privbench list` all read this one table (the loaders live in privbench/data/splits.py and
privbench/data/text_clients.py, and for a user's files privbench/data/user_data.py). It imports
nothing
heavy, so the spec can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from privbench.registry import Registry


@dataclass(frozen=True)
class DataSetInfo:
    """One data set: `records` is its size where fixed (built-in tabular), else None (text:
    generated from the spec, or a user's files, counted when they are read); `path` is what
    `data.path` must name: "" (nothing: built in), "file" or "folder"."""

    name: str
    kind: Literal["tabular", "text"]
    description: str
    records: int | None = None
    path: Literal["", "file", "folder"] = ""


DATA_SETS: Registry[DataSetInfo] = Registry("data set", "data.name")
for _info in (
    DataSetInfo("digits", "tabular", "scikit-learn digits: 1,797 8x8 images, 10 classes", 1797),
    DataSetInfo("breast_cancer", "tabular",
                "scikit-learn breast cancer: 569 records, 30 features", 569),
    DataSetInfo("synthetic_federation", "tabular", "generated, seeded federated data "
                "(privbench/data/federation_gen.py): 20,000 records, 32 features, 10 classes",
                20_000),
    DataSetInfo("table", "tabular", "your CSV or Parquet file (data.path): numeric feature "
                "columns, a label column (data.label), optionally a client-id column "
                "(data.client)", path="file"),
    DataSetInfo("stream", "tabular", "your Parquet or JSONL file too large for memory "
                "(data.path), sorted by a client-id column (data.client): each round reads only "
                "the sampled cohort's records (privbench/data/streamed.py)", path="file"),
    DataSetInfo("images", "tabular", "your image folder (data.path): one folder per class, "
                "optionally inside one folder per client; read as grey-scale pixels",
                path="folder"),
    DataSetInfo("support_messages", "text", "generated customer-support messages of each "
                "client (names, phone numbers, account ids), with planted canaries"),
    DataSetInfo("jsonl", "text", "your folder of .jsonl files (data.path), one client a file, "
                "one {\"text\", \"label\"?} object a line", path="folder"),
):
    DATA_SETS.register(_info.name, _info)

NAMES = DATA_SETS.names()


def names_of(kind: str) -> tuple[str, ...]:
    """The registered data sets of one kind ("tabular" or "text")."""
    return tuple(n for n, info in DATA_SETS.items() if info.kind == kind)


def builtin_names(kind: str) -> tuple[str, ...]:
    """The registered data sets of one kind that ship with privbench (no `data.path`)."""
    return tuple(n for n, info in DATA_SETS.items() if info.kind == kind and not info.path)
