"""The model zoo: small models for tabular and image data, built from the spec."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from privbench.spec import ModelSpec


def mlp(n_features: int, n_classes: int, hidden: list[int]) -> nn.Module:
    """A ReLU multilayer perceptron; no hidden layers gives multinomial logistic regression."""
    layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "mlp": (mlp, "ReLU multilayer perceptron (hidden = [] is logistic regression)"),
}


def build_model(spec: ModelSpec, n_features: int, n_classes: int, seed: int) -> nn.Module:
    """Build a model with weights initialised deterministically from `seed`."""
    builder, _ = MODELS[spec.name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(n_features, n_classes, list(spec.hidden))
