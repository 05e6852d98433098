"""Per-example signals of a model (losses, logits): what black-box attacks and utility read."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def logits(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> torch.Tensor:
    """The model's logits (N, C) on `x` (N, F), in eval mode, `batch_size` rows per forward.

    Args:
        model: the classifier (left in eval mode); x: the records (N, F);
        batch_size: rows per forward.
    """
    model.eval()
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    return torch.cat([model(xt[i:i + batch_size]) for i in range(0, len(xt), batch_size)])


@torch.no_grad()
def per_example_losses(model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cross-entropy of each record under the model, as float64.

    Args:
        model: the classifier; x, y: the records (N, F) and labels (N,).
    """
    out = logits(model, x)
    return F.cross_entropy(out, torch.from_numpy(np.asarray(y)), reduction="none").double().numpy()
