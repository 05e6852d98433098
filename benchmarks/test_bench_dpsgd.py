"""DP-SGD on the digits MLP (64-256-10), batch 256, 3 epochs, one thread: privbench's torch.func
DP-SGD (trainers/dpsgd.py, vmap of grad) against Opacus `make_private` (hooks) and against
non-private training through a DataLoader (the baseline), on the same data and batch size.

Goal: privbench at least 2x Opacus's throughput and at most 2x the non-private time.
Run: .venv/bin/python -m pytest benchmarks/test_bench_dpsgd.py -q -p no:randomly
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privbench.trainers.client_data import ClientData
from privbench.trainers.dpsgd import dp_sgd
from privbench.trainers.linear_stack import classifier_adapter

EPOCHS, BATCH, LR, CLIP, NOISE = 3, 256, 0.5, 1.0, 1.0


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))


def _non_private(x, y):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    return _train_epochs(model, opt, loader)


def _train_epochs(model: nn.Module, opt: torch.optim.Optimizer, loader) -> nn.Module:
    """EPOCHS of minibatch SGD over `loader`: the same loop for the plain and Opacus baselines."""
    for _ in range(EPOCHS):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    return model


def _non_private_slices(x, y):
    """Non-private SGD indexing tensors directly (no DataLoader): the fastest plain loop."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        order = torch.randperm(len(y), generator=gen)
        for s in range(0, len(y), BATCH):
            idx = order[s:s + BATCH]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model


def _opacus(x, y):
    from opacus import PrivacyEngine

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        model, opt, loader = engine.make_private(
            module=model, optimizer=opt, data_loader=loader, noise_multiplier=NOISE,
            max_grad_norm=CLIP, poisson_sampling=True)
        return _train_epochs(model, opt, loader)


def _privbench(x, y, per_example="auto"):
    model = _model()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    n = len(y)
    rate = BATCH / n
    steps = EPOCHS * round(1 / rate)
    data = ClientData({"x": x.unsqueeze(0), "y": y.unsqueeze(0)}, torch.tensor([n]))
    return dp_sgd(classifier_adapter(model), params, data, steps=steps,
                  sampling_rate=rate, expected_batch=BATCH, lr=LR, clip=CLIP,
                  noise_multiplier=NOISE, generator=torch.Generator().manual_seed(0),
                  noise_generator=torch.Generator().manual_seed(1), engine=per_example)


VARIANTS = {
    "baseline: non-private DataLoader": _non_private,
    "non-private: tensor slices, no DataLoader": _non_private_slices,
    "opacus: make_private (hooks)": _opacus,
    "privbench: torch.func vmap(grad) DP-SGD": lambda x, y: _privbench(x, y, "vmap"),
    "privbench: ghost engine (trainers/per_example.py) DP-SGD": lambda x, y: _privbench(x, y,
                                                                                   "ghost"),
    "privbench: DP-SGD, engine auto (the MLP adapter's batched linear-layer norms)": _privbench,
}


@pytest.mark.benchmark(group="dp-sgd digits mlp 64-256-10, batch 256, 3 epochs")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_dp_sgd_training(benchmark, digits, variant):
    benchmark.pedantic(VARIANTS[variant], args=digits, rounds=8, warmup_rounds=1)
