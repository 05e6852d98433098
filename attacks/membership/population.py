"""The audit pool: every record an auditor may query, its true membership, and shadow inclusion.

The target trained on the training split; the test split and the population pool were never
seen by it. Auditing the whole pool (train members against test + population non-members) is the
standard 50% inclusion design: on digits about 900 members and 900 non-members. Shadow models are
trained on the same pool, each record included in exactly half of them, so every record has IN
and OUT shadows, while the target's true bits are used only to evaluate, never to fit an attack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privbench.data.partition import ClientShard
from privbench.data.splits import SplitData


@dataclass(frozen=True)
class AuditPool:
    """Records in a fixed order: train, then test, then population."""

    x: np.ndarray
    y: np.ndarray
    member: np.ndarray  # bool: in the target's training set (used for evaluation only)
    origin: np.ndarray  # "train", "test" or "population"
    index: np.ndarray  # position within its own split
    client: np.ndarray  # the target client holding a member, -1 for non-members
    population_index: np.ndarray  # position among the population records, -1 otherwise

    def __len__(self) -> int:
        return len(self.y)

    def record_id(self, i: int) -> str:
        return f"{self.origin[i]}[{int(self.index[i])}]"


def audit_pool(data: SplitData, shards: list[ClientShard]) -> AuditPool:
    """Build the pool from a split data set and the target's client shards."""
    n_tr, n_te, n_po = len(data.y_train), len(data.y_test), len(data.y_pop)
    client = np.full(n_tr + n_te + n_po, -1, dtype=np.int64)
    for shard in shards:
        client[shard.indices] = shard.id
    pop_index = np.full(len(client), -1, dtype=np.int64)
    pop_index[n_tr + n_te:] = np.arange(n_po)
    return AuditPool(
        x=np.concatenate([data.x_train, data.x_test, data.x_pop]),
        y=np.concatenate([data.y_train, data.y_test, data.y_pop]),
        member=np.r_[np.ones(n_tr, bool), np.zeros(n_te + n_po, bool)],
        origin=np.array(["train"] * n_tr + ["test"] * n_te + ["population"] * n_po),
        index=np.r_[np.arange(n_tr), np.arange(n_te), np.arange(n_po)],
        client=client,
        population_index=pop_index,
    )


def balanced_inclusion(n_records: int, n_models: int, seed: int) -> np.ndarray:
    """Inclusion bits (K, N): each record is IN exactly half of the models (K even).

    With one model each record is IN with probability 1/2.
    """
    rng = np.random.default_rng([seed, 0x5AD0])
    if n_models == 1:
        return rng.random((1, n_records)) < 0.5
    rank = rng.random((n_models, n_records)).argsort(axis=0).argsort(axis=0)
    return rank < n_models / 2
