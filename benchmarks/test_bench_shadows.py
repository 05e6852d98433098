"""Shadow models for LiRA on digits, with the built-in `mia` suite's non-private configuration:
16 shadows trained as one batched model against ONE shadow (the baseline; goal: ratio <= 3),
and the whole LiRA-16 attack on a trained target (shadow training + scoring; goal <= 3 minutes).

Run: .venv/bin/python -m pytest benchmarks/test_bench_shadows.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privbench.attacks.membership.population import audit_pool, balanced_inclusion
from privbench.attacks.membership.shadow_attacks import shadow_attack_scorer
from privbench.attacks.membership.shadows import ShadowPlan, train_shadows
from privbench.data.partition import partition
from privbench.data.splits import load_split
from privbench.models import build_model
from privbench.scoring import CellContext
from privbench.spec.suite import load_suite
from privbench.trainers import tabular_inputs, train_fedavg


@pytest.fixture(scope="module")
def mia_cell():
    torch.set_num_threads(1)
    suite = load_suite("mia", ["privacy.epsilon=inf"])
    cell = suite.cells[0]
    spec = cell.spec
    data = load_split(spec.data, spec.seed)
    shards = partition(spec.data, data.y_train, spec.seed)
    model = build_model(spec.model, data.n_features, data.n_classes, spec.seed)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    return cell, data, shards, model, init


@pytest.mark.benchmark(group="shadow-training")
@pytest.mark.parametrize("shadows", ["baseline: 1 shadow", "16 shadows, one batched model"])
def test_shadow_training(benchmark, mia_cell, shadows):
    cell, data, shards, model, init = mia_cell
    spec = cell.spec
    pool = audit_pool(data, shards)
    k = 1 if shadows.startswith("baseline") else 16
    inclusion = balanced_inclusion(len(pool), 16, spec.seed)[:k]
    plan = ShadowPlan(spec.data, spec.train, 0.0, None, spec.seed + 1)
    out = benchmark.pedantic(train_shadows, args=(model, init, pool.x, pool.y, inclusion, plan),
                             rounds=2, warmup_rounds=0)
    assert next(iter(out.values())).shape[0] == k


@pytest.mark.benchmark(group="lira16-attack")
def test_whole_lira16_attack(benchmark, mia_cell):
    """Shadow training (no cache) and LiRA online/offline + RMIA scoring of a trained target."""
    cell, data, shards, _, _ = mia_cell
    spec = cell.spec
    target = build_model(spec.model, data.n_features, data.n_classes, spec.seed)
    trained = train_fedavg(*tabular_inputs(target, data, shards), spec.train, spec.privacy,
                           spec.seed)
    ctx = CellContext(cell=cell, data=data, shards=shards, trained=trained, run_dir=None)
    rows = benchmark.pedantic(shadow_attack_scorer, args=(ctx,), rounds=1, warmup_rounds=0)
    assert np.isfinite([r.value for r in rows]).all()
