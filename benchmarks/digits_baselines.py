"""What the DP-SGD benchmarks share: the digits data, the settings, and the non-private
baselines (through a DataLoader, and by tensor slices) with the one loop Opacus's variants use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EPOCHS, BATCH, LR, CLIP, NOISE = 3, 256, 0.5, 1.0, 1.0


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 digits scaled to [0, 1], on one thread (as every variant is timed)."""
    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


def train_epochs(model: nn.Module, opt: torch.optim.Optimizer, loader,
                 criterion: nn.Module | None = None) -> nn.Module:
    """EPOCHS of minibatch SGD over `loader`: one loop for the plain and Opacus baselines (a
    Poisson loader's empty batches are skipped)."""
    criterion = criterion or nn.CrossEntropyLoss()
    for _ in range(EPOCHS):
        for xb, yb in loader:
            if len(yb) == 0:
                continue
            opt.zero_grad()
            criterion(model(xb), yb).backward()
            opt.step()
    return model


def non_private(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """Non-private SGD through a shuffling DataLoader: the baseline."""
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    return train_epochs(model, opt, loader)


def non_private_slices(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """Non-private SGD indexing tensors directly (no DataLoader): the fastest plain loop."""
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
