"""One federated round's client training: the cohort as one batched model (torch.func) against
the same clients trained one after another in a Python loop (the baseline).

Run: .venv/bin/python -m pytest benchmarks -q
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from privbench.data.partition import partition
from privbench.data.splits import load_split
from privbench.models import build_model
from privbench.models.adapter import ClassifierAdapter
from privbench.spec.schema import DataSpec, ModelSpec
from privbench.trainers.client_data import ClientData, from_shards
from privbench.trainers.client_update import local_sgd

EPOCHS, BATCH, LR, COHORT = 2, 8, 0.1, 20


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    spec = DataSpec(clients=100)
    data = load_split(spec, 0)
    shards = partition(spec, data.y_train, 0)
    clients = from_shards(data.x_train, data.y_train, shards)
    xs, ys, counts = clients.batch["x"], clients.batch["y"], clients.counts
    model = build_model(ModelSpec(hidden=[32]), data.n_features, data.n_classes, 0)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    cohort = torch.arange(COHORT)
    return model, params, xs[cohort], ys[cohort], counts[cohort]


def _loop(model, params, xs, ys, counts):
    gen = torch.Generator().manual_seed(0)
    updates = []
    for c in range(len(counts)):
        local = {n: p.clone().requires_grad_(True) for n, p in params.items()}
        n = int(counts[c])
        for _ in range(EPOCHS):
            order = torch.randperm(n, generator=gen)
            for s in range(0, n, BATCH):
                idx = order[s:s + BATCH]
                out = torch.func.functional_call(model, local, (xs[c, idx],))
                loss = F.cross_entropy(out, ys[c, idx])
                grads = torch.autograd.grad(loss, list(local.values()))
                with torch.no_grad():
                    for p, g in zip(local.values(), grads, strict=True):
                        p -= LR * g
        updates.append({n: (local[n] - params[n]).detach() for n in params})
    return updates


def _vectorised(model, params, xs, ys, counts):
    data = ClientData({"x": xs, "y": ys}, counts)
    return local_sgd(ClassifierAdapter(model), params, data, epochs=EPOCHS, batch_size=BATCH,
                     lr=LR,
                     generator=torch.Generator().manual_seed(0))


@pytest.mark.benchmark(group="federated-round")
@pytest.mark.parametrize("variant", ["baseline: python loop", "privbench: torch.func vmap"])
def test_cohort_local_training(benchmark, setup, variant):
    fn = _loop if variant.startswith("baseline") else _vectorised
    benchmark.pedantic(fn, args=setup, rounds=10, warmup_rounds=2)
