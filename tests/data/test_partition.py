"""Data splits and federated partitions are disjoint, complete and deterministic."""

from __future__ import annotations

import numpy as np

from privbench.data.partition import partition
from privbench.data.splits import load_split
from privbench.spec.schema import DataSpec


def test_split_is_disjoint_stratified_and_seeded():
    spec = DataSpec(name="digits")
    a, b = load_split(spec, 0), load_split(spec, 0)
    assert a.fingerprint() == b.fingerprint() != load_split(spec, 1).fingerprint()
    rows = [tuple(r) for part in (a.x_train, a.x_test, a.x_pop) for r in part]
    assert len(a.x_train) + len(a.x_test) + len(a.x_pop) == 1797
    assert len(set(rows)) >= len(rows) - 5  # digits has a handful of duplicate images
    assert set(np.unique(a.y_test)) == set(range(10))


def test_iid_partition_covers_every_record_once():
    spec = DataSpec(clients=37)
    labels = np.arange(500) % 10
    shards = partition(spec, labels, seed=0)
    allidx = np.concatenate([s.indices for s in shards])
    assert len(shards) == 37 and sorted(allidx.tolist()) == list(range(500))
    sizes = [len(s.indices) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_partition_is_skewed_nonempty_and_deterministic():
    spec = DataSpec(clients=30, partition="dirichlet", dirichlet_alpha=0.1)
    labels = np.repeat(np.arange(10), 60)
    shards = partition(spec, labels, seed=4)
    again = partition(spec, labels, seed=4)
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(shards, again, strict=True))
    allidx = np.concatenate([s.indices for s in shards])
    assert sorted(allidx.tolist()) == list(range(600))
    assert all(len(s.indices) > 0 for s in shards)
    classes_per_client = [len(np.unique(labels[s.indices])) for s in shards]
    assert np.median(classes_per_client) <= 4  # label skew: most clients see few classes
