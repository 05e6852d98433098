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
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privbench.models import build_model
from privbench.models.adapter import ClassifierAdapter
from privbench.spec import ModelSpec
from privbench.trainers.aggregation import gaussian_like
from privbench.trainers.dpsgd import poisson_batches
from privbench.trainers.per_example import clipped_sum

EPOCHS, BATCH, LR, CLIP, NOISE = 3, 256, 0.5, 1.0, 1.0


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


def _model() -> nn.Module:
    return build_model(ModelSpec(name="cnn", channels=[16, 32]), 64, 10, seed=0)


def _train_epochs(model: nn.Module, opt: torch.optim.Optimizer, loader, criterion=None):
    """EPOCHS of minibatch SGD over `loader`: one loop for the plain and Opacus baselines."""
    criterion = criterion or nn.CrossEntropyLoss()
    for _ in range(EPOCHS):
        for xb, yb in loader:
            if len(yb) == 0:
                continue
            opt.zero_grad()
            criterion(model(xb), yb).backward()
            opt.step()
    return model


def _non_private(x, y):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    return _train_epochs(model, opt, loader)


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
            return _train_epochs(model, opt, loader, criterion)
        model, opt, loader = engine.make_private(
            module=model, optimizer=opt, data_loader=loader, noise_multiplier=NOISE,
            max_grad_norm=CLIP, poisson_sampling=True, grad_sample_mode=mode)
        return _train_epochs(model, opt, loader)


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
