"""The model adapter: the one contract between a model and the trainer, attacks and utility.

Every model privbench trains goes through an adapter (in the spirit of Opacus's
`GradSampleModule` and scikit-learn's estimator contract), so that one trainer, one clipping rule
and every attack serve every model: an MLP or CNN, a user's `nn.Module`, a Hugging Face causal LM
or sequence classifier with LoRA or full fine-tuning.

Contract:
- Parameters are a dict `Params` (name -> tensor) of the *trainable* parameters only, in the
  module's `named_parameters()` order (noise is drawn in that order: keep it). Frozen weights
  (e.g. the base model under LoRA) stay inside `module` and are never part of `Params`.
- A `Batch` is a dict of tensors whose first dimension is the example: a classifier's is
  `{"x": (B, ...), "y": (B,)}`; a language model's `{"ids": (B, T), "weights": (B, T-1),
  "labels": (B,)}`. Client data adds leading dimensions (clients, records); the trainer indexes
  them, the adapter never sees them.
- `per_example_loss(params, batch)` is functional (`torch.func.functional_call`) and returns one
  loss per example, (B,): the trainer takes per-example gradients of it (vmap of grad, or another
  engine), so it must not mix examples (no batch norm, no dropout: the module is in eval mode).
- `outputs(params, batch)` returns the logits attacks and utility read.
- `release(params)` writes `params` into the module and returns it: the model a user receives.
- Optionally `clipped_sum(params, batch, weights, clip)` computes the weighted sum of per-example
  gradients each clipped to `clip` without materialising them (ghost clipping); adapters that
  cannot simply do not define it. With `before_clip=` (trainers/per_example.BeforeClip: the
  audit's canary rows) it takes the hook's rows' norms into its norms before its clip-factor
  line and adds their gradients times that factor (the Dirac canaries need it).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]
Batch = dict[str, torch.Tensor]


@runtime_checkable
class ModelAdapter(Protocol):
    """What the trainer, the attacks and the utility suite need of a model."""

    module: nn.Module

    def init_params(self) -> Params:
        """Detached copies of the trainable parameters, in the module's parameter order."""
        ...

    def per_example_loss(self, params: Params, batch: Batch) -> torch.Tensor:
        """The loss of each example of `batch` under `params`, shape (B,).

        Args:
            params: the trainable parameters (name -> tensor); batch: the batch dict.
        """
        ...

    def outputs(self, params: Params, batch: Batch) -> torch.Tensor:
        """The model's logits on `batch` under `params`.

        Args:
            params: the trainable parameters (name -> tensor); batch: the batch dict.
        """
        ...

    def release(self, params: Params) -> nn.Module:
        """Write `params` into the module and return it, as released to users."""
        ...


class ClassifierAdapter:
    """Any `nn.Module` mapping inputs `x` to class logits, trained with cross-entropy.

    Args:
        module: the classifier; every parameter with `requires_grad` is trainable. It is put in
            eval mode (per-example losses must not mix examples).
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module.eval()

    def init_params(self) -> Params:
        """Detached copies of the module's trainable parameters: the model training starts from."""
        return {n: p.detach().clone() for n, p in self.module.named_parameters()
                if p.requires_grad}

    def outputs(self, params: Params, batch: Batch) -> torch.Tensor:
        """The module's logits (B, C) on `batch["x"]`, run with `params` in place of its own.

        Args:
            params: the trainable parameters (name -> tensor); batch: "x", (B, ...).
        """
        return functional_call(self.module, params, (batch["x"],), strict=False)

    def per_example_loss(self, params: Params, batch: Batch) -> torch.Tensor:
        """The cross-entropy of each example against `batch["y"]`, shape (B,).

        Args:
            params: the trainable parameters (name -> tensor); batch: "x" and "y" (B,).
        """
        return F.cross_entropy(self.outputs(params, batch), batch["y"], reduction="none")

    def release(self, params: Params) -> nn.Module:
        """The adapter's own module with `params` copied into it (in place), for release."""
        with torch.no_grad():
            for name, p in self.module.named_parameters():
                if name in params:
                    p.copy_(params[name])
        return self.module
