"""A user's own models, as `model.factory = "user_models:..."` entry points name them (tests put
this folder on the import path)."""

from __future__ import annotations

from torch import nn


def tanh_mlp(n_features: int, n_classes: int, width: int = 8) -> nn.Module:
    """A model privbench's zoo does not have: tanh activations, a width from `model.kwargs`."""
    return nn.Sequential(nn.Linear(n_features, width), nn.Tanh(), nn.Linear(width, n_classes))


def wrong_width(n_features: int, n_classes: int) -> nn.Module:
    """Returns one logit too few: its output shape is refused before training."""
    return nn.Linear(n_features, n_classes - 1)


NOT_CALLABLE = 3
