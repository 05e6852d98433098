"""DP-SGD on the zoo's digits CNN (conv 1->16->32, max-pool, linear; batch 256, 3 epochs, one
thread): privbench's per-example engines (trainers/per_example.py: ghost norms, vmap of grad)
against non-private training of the same CNN (through a DataLoader: the baseline; and by tensor
slices) and against Opacus's modes (hooks, functorch, ghost clipping) on the same model and data.

Goal: privbench's DP-SGD at most 2x the non-private time and faster than Opacus's best mode.
Run: .venv/bin/python -m pytest benchmarks/test_bench_cnn_dpsgd.py -q -p no:randomly
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

from privbench.models import build_model
from privbench.models.adapter import ClassifierAdapter
from privbench.spec.schema import ModelSpec
from privbench.trainers.aggregation import gaussian_like
from privbench.trainers.dpsgd import poisson_batches
from privbench.trainers.per_example import clipped_sum


@pytest.fixture(scope="module")
def digits():
    return digits_tensors()


def _model() -> nn.Module:
    return build_model(ModelSpec(name="cnn", channels=[16, 32]), 64, 10, seed=0)



def _non_private(x, y):
    return non_private(_model(), x, y)


def _non_private_slices(x, y):
    return non_private_slices(_model(), x, y)


def _opacus(x, y, mode: str):
    from opacus import PrivacyEngine

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        if mode == "ghost":  # ghost clipping needs the criterion wrapped (two backward passes)
            model, opt, criterion, loader = engine.make_private(
                module=model, optimizer=opt, data_loader=loader, criterion=nn.CrossEntropyLoss(),
                noise_multiplier=NOISE, max_grad_norm=CLIP, poisson_sampling=True,
                grad_sample_mode="ghost")
            return train_epochs(model, opt, loader, criterion)
        model, opt, loader = engine.make_private(
            module=model, optimizer=opt, data_loader=loader, noise_multiplier=NOISE,
            max_grad_norm=CLIP, poisson_sampling=True, grad_sample_mode=mode)
        return train_epochs(model, opt, loader)


def _privbench(x, y, engine: str):
    """DP-SGD steps on Poisson batches: the engine's clipped sum, N(0, (z C)^2) noise, SGD."""
    adapter = ClassifierAdapter(_model())
    params = {n: p.unsqueeze(0) for n, p in adapter.init_params().items()}
    n = len(y)
    rate = BATCH / n
    valid = torch.ones(1, n, dtype=torch.bool)
    gen, noise_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    for _ in range(EPOCHS * round(1 / rate)):
        idx, weights = poisson_batches(valid, rate, gen)
        sums, _ = clipped_sum(adapter, params, {"x": x[idx], "y": y[idx]}, weights, clip=CLIP,
                              engine=engine)
        noise = gaussian_like(sums, NOISE * CLIP, noise_gen)
        params = {k: p - LR * (sums[k] + noise[k]) / BATCH for k, p in params.items()}
    return adapter.release({k: p[0] for k, p in params.items()})


VARIANTS = {
    "baseline: non-private DataLoader": _non_private,
    "non-private: tensor slices, no DataLoader": _non_private_slices,
    "opacus: hooks": lambda x, y: _opacus(x, y, "hooks"),
    "opacus: functorch": lambda x, y: _opacus(x, y, "functorch"),
    "opacus: ghost clipping": lambda x, y: _opacus(x, y, "ghost"),
    "privbench: vmap(grad) engine": lambda x, y: _privbench(x, y, "vmap"),
    "privbench: ghost engine (per-layer norms)": lambda x, y: _privbench(x, y, "ghost"),
}


@pytest.mark.benchmark(group="dp-sgd digits cnn 16-32, batch 256, 3 epochs")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cnn_dp_sgd_training(benchmark, digits, variant):
    benchmark.pedantic(VARIANTS[variant], args=digits, rounds=5, warmup_rounds=1)
