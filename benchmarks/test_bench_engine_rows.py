"""One clipped sum for 10 rows (clients DP-SGD-ing side by side) of 16 digits examples each,
through each per-example engine (trainers/per_example.py), on the zoo's MLP (64-256-10) and CNN
(16-32); the baseline is the vmap engine (vmap over rows of vmap over examples of grad). For the
MLP, today's linear-stack fast path in trainers/dpsgd.py (rows as one batched matmul) is timed
beside them: the ghost engine generalises it to any Linear/Conv/Embedding model.

Run: .venv/bin/python -m pytest benchmarks/test_bench_engine_rows.py -q -p no:randomly
"""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from privbench.models import build_model
from privbench.models.adapter import ClassifierAdapter
from privbench.spec.schema import ModelSpec
from privbench.trainers.linear_stack import linear_stack_clipped_sum
from privbench.trainers.per_example import clipped_sum

ROWS, BATCH, CLIP = 10, 16, 1.0
MODELS = {"mlp": ModelSpec(hidden=[256]), "cnn": ModelSpec(name="cnn", channels=[16, 32])}


@pytest.fixture(scope="module")
def rows():
    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:ROWS * BATCH]
    x = torch.tensor(x / 16.0, dtype=torch.float32)[idx].reshape(ROWS, BATCH, 64)
    return x, torch.tensor(y)[idx].reshape(ROWS, BATCH)


def _setup(name):
    model = build_model(MODELS[name], 64, 10, seed=0)
    adapter = ClassifierAdapter(model)
    params = {n: p.unsqueeze(0).repeat(ROWS, *[1] * p.dim()) for n, p in
              adapter.init_params().items()}
    return model, adapter, params


VARIANTS = ["baseline: vmap engine", "ghost engine", "hooks engine", "dpsgd linear stack"]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_engine_rows(benchmark, rows, name, variant):
    if variant == "dpsgd linear stack" and name != "mlp":
        pytest.skip("the linear-stack path only runs on Linear stacks")
    benchmark.group = f"clipped sum, {ROWS} rows x {BATCH} examples, {name}"
    model, adapter, params = _setup(name)
    x, y = rows
    weights = torch.ones(ROWS, BATCH)
    if variant == "dpsgd linear stack":
        benchmark.pedantic(linear_stack_clipped_sum, args=(model, params, x, y, weights, CLIP),
                           rounds=20, warmup_rounds=2)
        return
    engine = variant.split()[-2] if variant.startswith("baseline") else variant.split()[0]
    benchmark.pedantic(clipped_sum, args=(adapter, params, {"x": x, "y": y}, weights),
                       kwargs={"clip": CLIP, "engine": engine}, rounds=20, warmup_rounds=2)
