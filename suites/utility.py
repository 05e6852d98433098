"""The utility suite: how useful a trained classifier is on held-out data."""

from __future__ import annotations

import numpy as np
from torch import nn

from privbench.results import MetricRow
from privbench.signals import logits, per_example_losses
from privbench.stats import clopper_pearson, mean_interval


def classification_utility(experiment: str, model: nn.Module, x_test: np.ndarray,
                           y_test: np.ndarray) -> list[MetricRow]:
    """Test accuracy (Clopper-Pearson interval) and mean test loss (t interval)."""
    pred = logits(model, x_test).argmax(dim=1).numpy()
    correct = int((pred == y_test).sum())
    n = len(y_test)
    lo, hi = clopper_pearson(correct, n)
    loss, loss_lo, loss_hi = mean_interval(per_example_losses(model, x_test, y_test))
    details = {"n": n, "split": "test"}
    return [
        MetricRow(experiment, "utility", "accuracy", correct / n, lo, hi, None, details),
        MetricRow(experiment, "utility", "loss", loss, loss_lo, loss_hi, None, details),
    ]
