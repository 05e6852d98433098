"""The data-set registry: every data set privbench knows, its kind (tabular or text) and size.

The spec's allowed `data.name` values, its size checks, the gates' "delta at most 1/n" and
`privbench list` all read this one table (the loaders live in privbench/data.py and
privbench/lm/textdata.py). It imports nothing heavy, so the spec can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from privbench.registry import Registry


@dataclass(frozen=True)
class DataSetInfo:
    """One data set: `records` is its size where fixed (built-in tabular), else None (text:
    generated from the spec or read from a folder, counted when it loads)."""

    name: str
    kind: Literal["tabular", "text"]
    description: str
    records: int | None = None


DATA_SETS: Registry[DataSetInfo] = Registry("data set", "data.name")
for _info in (
    DataSetInfo("digits", "tabular", "scikit-learn digits: 1,797 8x8 images, 10 classes", 1797),
    DataSetInfo("breast_cancer", "tabular",
                "scikit-learn breast cancer: 569 records, 30 features", 569),
    DataSetInfo("synthetic_federation", "tabular", "generated, seeded federated data "
                "(privbench/federation_gen.py): 20,000 records, 32 features, 10 classes", 20_000),
    DataSetInfo("support_messages", "text", "generated customer-support messages of each "
                "client (names, phone numbers, account ids), with planted canaries"),
    DataSetInfo("jsonl", "text", "your folder of .jsonl files (data.path), one client a file, "
                "one {\"text\", \"label\"?} object a line"),
):
    DATA_SETS.register(_info.name, _info)

NAMES = DATA_SETS.names()


def names_of(kind: str) -> tuple[str, ...]:
    """The registered data sets of one kind ("tabular" or "text")."""
    return tuple(n for n, info in DATA_SETS.items() if info.kind == kind)
