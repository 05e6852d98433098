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


def no_bias_first(n_features: int, n_classes: int) -> nn.Module:
    """Its first layer has no bias: the analytic inversion attack cannot read it."""
    return nn.Sequential(nn.Linear(n_features, 8, bias=False), nn.ReLU(), nn.Linear(8, n_classes))


def normed_logits(n_features: int, n_classes: int) -> nn.Module:
    """Ends with a LayerNorm: no last-layer bias holds the logits' gradient (iDLG)."""
    return nn.Sequential(nn.Linear(n_features, n_classes), nn.LayerNorm(n_classes))


class _ItemScaled(nn.Module):
    """Reads a tensor's value in Python (`.item()`): torch.func.vmap cannot trace it."""

    def __init__(self, n_features: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, x):
        return self.linear(x) / (1.0 + abs(x.sum().item()) * 0.0)


def item_scaled(n_features: int, n_classes: int) -> nn.Module:
    return _ItemScaled(n_features, n_classes)


def not_a_module(n_features: int, n_classes: int) -> str:
    """Returns a description, not a model."""
    return f"a model of {n_features} features and {n_classes} classes"
