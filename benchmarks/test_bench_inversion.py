"""Inverting Gradients on 16 attacked batches: one vmapped optimisation over all batches against
the same attack run batch by batch in a Python loop (the baseline).

Run: .venv/bin/python -m pytest benchmarks -q -k inversion
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.func import functional_call, grad, vmap

from privbench.attacks.inversion.image import inverting_gradients
from privbench.models import mlp

BATCHES, BATCH, ITERATIONS = 16, 4, 30


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    model = mlp(64, 10, [32])
    params = {k: v.detach() for k, v in model.named_parameters()}
    idx = torch.arange(BATCHES * BATCH).view(BATCHES, BATCH)

    def loss(p, xb, yb):
        return F.cross_entropy(functional_call(model, p, (xb,)), yb)

    target = vmap(grad(loss), in_dims=(None, 0, 0))(params, x[idx], y[idx])
    return model, params, target, y[idx]


def _loop(model, params, target, labels):
    return [inverting_gradients(model, params, {n: t[i:i + 1] for n, t in target.items()},
                                labels[i:i + 1], (8, 8), iterations=ITERATIONS)
            for i in range(BATCHES)]


def _vectorised(model, params, target, labels):
    return inverting_gradients(model, params, target, labels, (8, 8), iterations=ITERATIONS)


@pytest.mark.benchmark(group="inverting-gradients")
@pytest.mark.parametrize("variant", ["baseline: python loop over batches",
                                     "privbench: all batches in one vmap"])
def test_inverting_gradients_batches(benchmark, setup, variant):
    fn = _loop if variant.startswith("baseline") else _vectorised
    benchmark.pedantic(fn, args=setup, rounds=3, warmup_rounds=1)
