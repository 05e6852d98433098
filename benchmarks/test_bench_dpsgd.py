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
from digits_baselines import (
    BATCH,
    CLIP,
    EPOCHS,
    LR,
    NOISE,
    digits_tensors,
    non_private,
    non_private_slices,
    train_epochs,
)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privbench.trainers.client_data import ClientData
from privbench.trainers.dpsgd import dp_sgd
from privbench.trainers.linear_stack import classifier_adapter


@pytest.fixture(scope="module")
def digits():
    return digits_tensors()


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))


def _non_private(x, y):
    return non_private(_model(), x, y)



def _non_private_slices(x, y):
    return non_private_slices(_model(), x, y)


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
        return train_epochs(model, opt, loader)


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
