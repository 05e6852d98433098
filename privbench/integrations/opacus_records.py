"""What an Opacus audit reads of the user's own objects: records of their data set, and a copy of
their model without Opacus's capture hooks."""

from __future__ import annotations

import copy as copy_module
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler, TensorDataset

from privbench.audit.canaries import input_canaries
from privbench.data.splits import SplitData
from privbench.errors import PrivbenchError
from privbench.integrations.opacus_errors import OpacusAuditError

# Natural records read from the user's data set to choose quiet coordinates and the feature range.
SAMPLE_RECORDS = 512


def user_records(dataset: Dataset, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `limit` (input, label) records of the user's data set, as two stacked tensors.

    Args:
        dataset: the DataLoader's data set; limit: the most records read.
    Raises:
        OpacusAuditError: an empty data set, or an item that is not an (input, label) pair.
    """
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        x, y = dataset.tensors
        return x[:limit], y[:limit]
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise OpacusAuditError("opacus audit: the DataLoader's data set is empty")
    xs, ys = [], []
    for i in range(min(limit, len(dataset))):  # type: ignore[arg-type]
        item = dataset[i]
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise OpacusAuditError(
                f"opacus audit: data set item {i} is a {type(item).__name__}, not an (input, "
                "label) pair; plant canaries into a DataLoader over (input, label) records")
        xs.append(torch.as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
    return torch.stack(xs), torch.stack(ys)


def without_opacus_hooks(module: nn.Module) -> nn.Module:
    """A copy of the user's model without Opacus's capture hooks (torch.func cannot trace them),
    for choosing coordinates at the initial parameters."""
    copy = copy_module.deepcopy(module)
    for sub in copy.modules():
        for hooks in (sub._forward_hooks, sub._forward_pre_hooks, sub._backward_hooks,
                      sub._backward_pre_hooks):
            hooks.clear()
    return copy


@dataclass(frozen=True)
class PlantedRecords:
    """The canary records drawn for a user's DataLoader, and the loader that includes them."""

    x: torch.Tensor  # every drawn canary's input, (m, ...) like the user's inputs
    y: torch.Tensor  # and its label
    sample: tuple[torch.Tensor, torch.Tensor]  # natural records read to choose coordinates
    n_natural: int  # records in the user's data set
    loader: DataLoader  # the user's records plus the included canaries


def plant_canary_records(loader: DataLoader, kind: str, m: int, bits: np.ndarray,
                         rng: np.random.Generator,
                         population: tuple[Any, Any] | None) -> PlantedRecords:
    """Draw `m` canary records for the user's DataLoader and include those `bits` selects.

    Args:
        loader: the user's DataLoader of (input, label) records, before make_private.
        kind: "dirac" (records marked for gradient canaries: out-of-distribution inputs),
            "mislabelled" or "ood".
        m: canaries drawn.
        bits: each canary's inclusion bit.
        rng: the audit's generator.
        population: (inputs, labels) of non-member records, or None.

    Returns:
        The canaries and the DataLoader to hand to `PrivacyEngine.make_private` (same batch
        size, collate function and workers; shuffled when the user's was).
    """
    if not isinstance(loader, DataLoader):
        raise OpacusAuditError(f"opacus audit: plant() takes the DataLoader you pass to "
                               f"make_private, not a {type(loader).__name__}")
    x, y = user_records(loader.dataset, SAMPLE_RECORDS)
    if x.dtype.is_floating_point is False or y.dtype.is_floating_point:
        raise OpacusAuditError(f"opacus audit: records are ({x.dtype}, {y.dtype}): canaries "
                               "need float inputs and integer class labels")
    n_natural = len(loader.dataset)  # type: ignore[arg-type]
    n_classes = int(y.max()) + 1
    flat = x.reshape(len(x), -1).numpy()
    pop = (np.zeros((0, flat.shape[1]), np.float32), np.zeros(0, np.int64))
    if population is not None:
        px, py = (torch.as_tensor(a) for a in population)
        pop = (px.reshape(len(px), -1).float().numpy(), py.long().numpy())
        n_classes = max(n_classes, int(py.max()) + 1)
    split = SplitData("user", flat, y.long().numpy(), flat[:0], y.long().numpy()[:0],
                      pop[0], pop[1], n_classes)
    kind = "ood" if kind == "dirac" else kind
    try:
        cx, cy = input_canaries(kind, split, m, rng)
    except PrivbenchError as e:
        raise OpacusAuditError(f"opacus audit: canaries = {m}: {e}") from None
    canary_x = torch.from_numpy(np.asarray(cx)).to(x.dtype).reshape(m, *x.shape[1:])
    canary_y = torch.from_numpy(np.asarray(cy)).to(y.dtype)
    included = TensorDataset(canary_x[bits], canary_y[bits])
    shuffled = isinstance(loader.sampler, RandomSampler)
    joined = DataLoader(ConcatDataset([loader.dataset, included]),
                        batch_size=loader.batch_size, shuffle=shuffled,
                        num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                        pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                        generator=loader.generator)
    return PlantedRecords(canary_x, canary_y, (x, y), n_natural, joined)
