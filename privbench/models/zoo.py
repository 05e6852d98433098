"""The model zoo: small classifiers for the tabular and image data, and a user's own `nn.Module`.

Every model here maps a batch of flat feature vectors x (B, n_features) to class logits
(B, n_classes), so it goes through `ClassifierAdapter` and the one trainer unchanged:
- "mlp": a ReLU multilayer perceptron (`model.hidden`; [] is logistic regression);
- "cnn": a small convolutional network for square one-channel images given flat (digits: 8x8),
  two 3x3 convolutions (`model.channels`), a 2x2 max-pool and a linear head;
- "factory": any `nn.Module` from a user's entry point `model.factory = "pkg.mod:fn"`, called as
  fn(n_features, n_classes, **model.kwargs).

Whatever can be known before training is checked by `model_problems` (the factory imports, is
callable, returns a module whose output has shape (B, n_classes); the CNN's input is a square
image), each problem one line naming the field and the fix.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import torch
from torch import nn

from privbench.errors import PrivbenchError
from privbench.spec.schema import DataSpec, ModelSpec


def mlp(n_features: int, n_classes: int, hidden: list[int]) -> nn.Module:
    """A ReLU multilayer perceptron; no hidden layers gives multinomial logistic regression.

    Args:
        n_features: the input width; n_classes: the logits; hidden: the hidden widths.
    """
    layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


class FlatImage(nn.Module):
    """Reshape flat features (B, side*side) into one-channel images (B, 1, side, side)."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flat inputs (B, side * side) as one-channel images (B, 1, side, side)."""
        return x.reshape(x.shape[0], 1, self.side, self.side)


def cnn(n_features: int, n_classes: int, channels: list[int]) -> nn.Module:
    """Two 3x3 same-size convolutions with ReLU, a 2x2 max-pool and a linear head.

    Args:
        n_features: pixels of a square one-channel image, given flat (64 for the 8x8 digits).
        n_classes: number of classes.
        channels: output channels of the two convolutions.

    Returns:
        The network, mapping (B, n_features) to logits (B, n_classes). No batch norm or dropout:
        per-example gradients must not mix examples.
    """
    side = math.isqrt(n_features)
    c1, c2 = channels
    return nn.Sequential(
        FlatImage(side),
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(c2 * (side // 2) ** 2, n_classes),
    )


def load_factory(entry_point: str) -> Callable[..., nn.Module]:
    """The callable named by "pkg.mod:fn" (a dotted attribute path after the colon is allowed).

    Raises:
        PrivbenchError: one line naming `model.factory` when it cannot be imported or called.
    """
    field = f"model.factory = {entry_point!r}"
    module_name, sep, attr = entry_point.partition(":")
    if not sep or not module_name or not attr:
        raise PrivbenchError(f"{field}: must be \"package.module:function\"")
    try:
        obj = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or an error raised by the user's module itself
        raise PrivbenchError(f"{field}: cannot import {module_name} ({type(err).__name__}: "
                             f"{_first_line(err)}); put it on PYTHONPATH or fix the module") \
            from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PrivbenchError(f"{field}: {module_name} has no attribute {attr!r}; name an "
                                 "existing function")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PrivbenchError(f"{field}: {attr} is not callable; name a function or class")
    return obj


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else ""


def _build(spec: ModelSpec, n_features: int, n_classes: int) -> nn.Module:
    if spec.name == "cnn":
        return cnn(n_features, n_classes, list(spec.channels))
    if spec.name == "factory":
        factory = load_factory(str(spec.factory))
        try:
            model = factory(n_features, n_classes, **spec.kwargs)
        except Exception as err:
            raise PrivbenchError(f"model.factory = {spec.factory!r}: calling it with "
                                 f"(n_features={n_features}, n_classes={n_classes}, "
                                 f"**model.kwargs) failed ({type(err).__name__}: "
                                 f"{_first_line(err)}); fix model.kwargs or the factory") \
                from None
        if not isinstance(model, nn.Module):
            raise PrivbenchError(f"model.factory = {spec.factory!r}: returned a "
                                 f"{type(model).__name__}, not a torch.nn.Module")
        return model
    return mlp(n_features, n_classes, list(spec.hidden))


MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "mlp": (mlp, "ReLU multilayer perceptron (hidden = [] is logistic regression)"),
    "cnn": (cnn, "two 3x3 convolutions + max-pool + linear, for square one-channel images "
                 "(digits); widths in model.channels"),
    "factory": (load_factory, "your own torch.nn.Module: model.factory = \"pkg.mod:fn\", "
                              "called with (n_features, n_classes, **model.kwargs)"),
}


def model_problems(spec: ModelSpec, n_features: int, n_classes: int) -> list[str]:
    """What is wrong with building this model for this data, one line each (empty: nothing).

    Builds the model once and runs a forward pass on two zero inputs, so an import error, a
    factory that fails, a wrong output shape or a non-square CNN input are found before the
    first round.

    Args:
        spec: the model spec; n_features, n_classes: the data's input width and class count.
    """
    if spec.name == "cnn" and math.isqrt(n_features) ** 2 != n_features:
        return [f"model.name = 'cnn': takes square one-channel images given flat, but the data "
                f"has {n_features} features; use model.name = 'mlp'"]
    try:
        model = _seeded(spec, n_features, n_classes, seed=0)
    except PrivbenchError as err:
        return [str(err)]
    field = f"model.factory = {spec.factory!r}" if spec.name == "factory" else \
        f"model.name = {spec.name!r}"
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, n_features))
    except Exception as err:
        return [f"{field}: the model's forward on inputs of shape (2, {n_features}) failed "
                f"({type(err).__name__}: {_first_line(err)}); it must map (B, n_features) to "
                "(B, n_classes)"]
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, n_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return [f"{field}: the model maps inputs (2, {n_features}) to {shape}, not logits "
                f"(2, {n_classes}); return one logit per class"]
    if not any(p.requires_grad for p in model.parameters()):
        return [f"{field}: the model has no trainable parameters"]
    return []


def _seeded(spec: ModelSpec, n_features: int, n_classes: int, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(spec, n_features, n_classes)


def build_model(spec: ModelSpec, n_features: int, n_classes: int, seed: int) -> nn.Module:
    """Build a model with weights initialised deterministically from `seed`.

    Args:
        spec: the spec's model table.
        n_features: input features (flat).
        n_classes: number of classes.
        seed: initialisation seed (the global RNG is left as it was).

    Returns:
        The model. Raises `PrivbenchError` (one line) when `model_problems` finds a problem.
    """
    if problems := model_problems(spec, n_features, n_classes):
        raise PrivbenchError(problems[0])
    return _seeded(spec, n_features, n_classes, seed)


def spec_problems(spec: ModelSpec, data: DataSpec) -> list[str]:
    """`model_problems` for the data set's feature and class counts (spec checks; a user's files
    are read once per file state, privbench/data/user_data.py).

    Args:
        spec: the model spec; data: the data spec whose shape is read.
    """
    from privbench.data.splits import data_shape

    shape = data_shape(data)
    return model_problems(spec, shape.n_features, shape.n_classes)
