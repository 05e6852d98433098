"""Whether a cell's model can be trained and attacked as its spec designs, checked before any cell
starts: each problem one line naming the field and the fix.

`model_problems` (zoo.py) checks that the model builds and maps (B, n_features) to (B, n_classes).
This module checks what a design needs beyond that, which today's code would otherwise find only
inside a cell, after set-up or after training:
- gradient inversion reads a first nn.Linear layer with a bias on the inputs (the analytic
  first-layer attack) and a last nn.Linear with a bias giving the logits (iDLG's labels);
- Dirac gradient canaries each take one parameter coordinate, chosen from per-example gradients
  by `torch.func.vmap`;
- example-level DP-SGD needs a per-example gradient engine that runs on the model
  (`model.engine`, probed as the trainer probes it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from privbench.errors import PrivbenchError

if TYPE_CHECKING:
    from privbench.spec.schema import CellSpec


def _field(spec: CellSpec) -> str:
    m = spec.model
    return f"model.factory = {m.factory!r}" if m.name == "factory" else f"model.name = {m.name!r}"


def parameterised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules that own parameters directly, in the order `named_parameters` lists them."""
    owners: dict[str, nn.Module] = {}
    for name, _ in model.named_parameters():
        owner = name.rpartition(".")[0]
        owners.setdefault(owner, model.get_submodule(owner) if owner else model)
    return list(owners.items())


def inversion_problems(spec: CellSpec, model: nn.Module, n_features: int,
                       n_classes: int) -> list[str]:
    """What the enabled gradient-inversion attacks need of the model and cannot find.

    Args:
        spec: the cell spec (attacks.inversion.image_attacks, model).
        model: the built model; n_features, n_classes: the data's.

    Returns:
        One line per problem (empty: the attacks can read the model's updates).
    """
    layers = parameterised_layers(model)
    fix = "use model.name = 'mlp' or turn attacks.inversion.enabled off"
    first_name, first = layers[0]
    last_name, last = layers[-1]
    if not (isinstance(first, nn.Linear) and first.bias is not None
            and first.in_features == n_features):
        kind = type(first).__name__ + ("" if not isinstance(first, nn.Linear) else
                                       " without bias" if first.bias is None else
                                       f" on {first.in_features} inputs")
        return [f"attacks.inversion.enabled = true: the inversion attacks read the update of a "
                f"first nn.Linear layer with bias on the {n_features} inputs; {_field(spec)} "
                f"starts with {kind} (layer {first_name or 'the model'!r}); {fix}"]
    if "idlg" in spec.attacks.inversion.image_attacks and not (
            isinstance(last, nn.Linear) and last.bias is not None
            and last.out_features == n_classes):
        return [f"attacks.inversion.image_attacks: iDLG reads the labels from the bias of a last "
                f"nn.Linear layer giving the {n_classes} logits; {_field(spec)} ends with "
                f"{type(last).__name__} (layer {last_name or 'the model'!r}); drop 'idlg' or {fix}"]
    return []


def dirac_problems(spec: CellSpec, model: nn.Module, n_features: int) -> list[str]:
    """What Dirac gradient canaries need: a parameter coordinate each, chosen by vmap(grad).

    Args:
        spec: the cell's spec (audit.n_canaries, audit.design); model: the built model;
        n_features: its input width.
    Returns:
        One line per problem; empty when the canaries can be placed.
    """
    from privbench.audit.gradient_canaries import quiet_coordinates

    m = spec.audit.n_canaries
    n_params = sum(p.numel() for p in model.parameters())
    if spec.audit.design == "manual" and m > n_params:
        return [f"audit.n_canaries = {m}: {_field(spec)} has {n_params} parameters, one per "
                "Dirac canary; lower audit.n_canaries or widen the model"]
    try:
        quiet_coordinates(model, np.zeros((2, n_features), np.float32), np.zeros(2, np.int64),
                          min(m, n_params), np.random.default_rng(0))
    except Exception as err:
        return [f"audit.canary = 'dirac': the canaries' coordinates are chosen from per-example "
                f"gradients by torch.func.vmap, which fails on {_field(spec)} "
                f"({type(err).__name__}: {_first_line(err)}); use a model vmap can trace, or "
                "privacy.unit = 'client' with random-unit canary clients"]
    return []


def engine_problems(spec: CellSpec, model: nn.Module, n_features: int) -> list[str]:
    """Example-level DP-SGD: the per-example gradient engine (`model.engine`) must run.

    Args:
        spec: the cell's spec (model.engine); model: the built model; n_features: its input width.
    Returns:
        One line naming privacy.unit when the engine refuses the model; empty otherwise.
    """
    from privbench.trainers.dpsgd import resolve_engine
    from privbench.trainers.linear_stack import classifier_adapter

    adapter = classifier_adapter(model)  # the trainer's adapter, probed as the trainer does
    params = {n: p.unsqueeze(0) for n, p in adapter.init_params().items()}
    batch = {"x": torch.zeros(1, 2, n_features), "y": torch.zeros(1, 2, dtype=torch.long)}
    try:
        resolve_engine(adapter, params, batch, spec.model.engine)
    except PrivbenchError as err:
        return [f"privacy.unit = 'example': {err}"]
    return []


def design_problems(spec: CellSpec, n_features: int, n_classes: int) -> list[str]:
    """Every check above that the spec's design calls for, on the model built once.

    Args:
        spec: a tabular cell spec whose model passed `model_problems`.
        n_features, n_classes: the data set's.

    Returns:
        One line per problem.
    """
    inversion = spec.attacks.inversion.enabled
    dirac = spec.audit.enabled and spec.audit.canary == "dirac"
    example = spec.privacy.unit == "example" and math.isfinite(spec.privacy.epsilon)
    if not (inversion or dirac or example):
        return []
    from privbench.models.zoo import build_model

    model = build_model(spec.model, n_features, n_classes, spec.seed)
    problems = inversion_problems(spec, model, n_features, n_classes) if inversion else []
    if dirac:
        problems += dirac_problems(spec, model, n_features)
    if example:
        problems += engine_problems(spec, model, n_features)
    return problems


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else ""
