"""The fast path of a Linear-stack classifier (an MLP): clipped per-example sums without
per-example gradients, for every row (client or independent run) in one batched matmul per layer.

An adapter may define `clipped_sum(params, batch, weights, clip)` (privbench/models/adapter.py);
the trainer uses it in place of a generic engine. For a linear layer the per-example weight
gradient is the outer product g_i a_i^T, so its norm is ||g_i|| ||a_i|| and the clipped sum is
(c * G)^T A (ghost clipping, Li et al. 2022; book-keeping, Bu et al. 2023). Unlike a per-row
engine it batches the rows too (`torch.bmm`), which is what DP-SGD over many clients and the
multi-run audit's hundreds of runs need. Clipping is the one rule, `aggregation.clip_factor`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from privbench.models.adapter import Batch, ClassifierAdapter, Params
from privbench.trainers import aggregation

if TYPE_CHECKING:
    from privbench.trainers.per_example import BeforeClip

# Layers without parameters that act on each example independently.
ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Identity)


def is_linear_stack(model: nn.Module) -> bool:
    """True for an nn.Sequential of Linear layers and parameter-free element-wise activations."""
    return isinstance(model, nn.Sequential) and all(
        isinstance(m, (nn.Linear, *ELEMENTWISE)) for m in model) and all(
        m.bias is not None for m in model if isinstance(m, nn.Linear)) and all(
        p.requires_grad for p in model.parameters())


def linear_stack_clipped_sum(model: nn.Sequential, params: Params, x: torch.Tensor,
                             y: torch.Tensor, weights: torch.Tensor, clip: float,
                             before_clip: BeforeClip | None = None,
                             ) -> tuple[Params, torch.Tensor]:
    """The clipped sum of per-example gradients, each clipped to `clip`, and their norms.

    Args:
        model: the Linear stack; params: name -> (K, ...); x: (K, b, F); y: (K, b);
        weights: (K, b) 0/1 (padding 0); clip: the clipping norm C.
        before_clip: sets chosen rows' gradients before clipping (their loss gets weight 0;
            their norms and clipped gradients come from the hook, through the same factor;
            the model runs on its `model_width` leading columns only).
    Returns:
        The clipped sums (K, ...) and the per-example norms (K, b) (0 on padding).
    """
    inputs, outputs, names = [], [], []
    cols = weights.shape[1]
    width = cols if before_clip is None else min(cols, before_clip.model_width)  # canaries after
    x, y = x[:, :width], y[:, :width]
    h = x
    for name, layer in model.named_children():
        if isinstance(layer, nn.Linear):
            w, b = params[f"{name}.weight"], params[f"{name}.bias"]
            inputs.append(h.detach())
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if not h.requires_grad:
                h.requires_grad_(True)
            outputs.append(h)
            names.append(name)
        else:
            h = layer(h)
    losses = F.cross_entropy(h.flatten(0, 1), y.flatten(), reduction="none")
    backprop = weights if before_clip is None else weights * ~before_clip.rows
    grads = torch.autograd.grad((losses * backprop[:, :width].flatten()).sum(), outputs)
    sq = torch.zeros_like(weights[:, :width])
    for a, g in zip(inputs, grads, strict=True):
        g_sq = g.pow(2).sum(-1)
        sq = sq + a.pow(2).sum(-1) * g_sq + g_sq
    if width < cols:  # columns of canary rows and padding only: no model gradient
        sq = F.pad(sq, (0, cols - width))
    norms = sq.sqrt() if before_clip is None else before_clip.norms(sq.sqrt())
    factor = aggregation.clip_factor(norms, clip) * weights
    sums: Params = {}
    for name, a, g in zip(names, inputs, grads, strict=True):
        scaled = g * factor[:, :width].unsqueeze(-1)
        sums[f"{name}.weight"] = torch.bmm(scaled.transpose(1, 2), a)
        sums[f"{name}.bias"] = scaled.sum(1)
    if before_clip is not None:
        before_clip.add_clipped(sums, factor)
    return {n: sums[n] for n in params}, norms


class LinearStackAdapter(ClassifierAdapter):
    """A classifier adapter whose module is a Linear stack, with the batched fast path."""

    def clipped_sum(self, params: Params, batch: Batch, weights: torch.Tensor, clip: float,
                    before_clip: BeforeClip | None = None) -> tuple[Params, torch.Tensor]:
        """Rows' clipped per-example sums (K, ...) and norms (K, b); see the module doc.

        Args:
            params: stacked (K, ...); batch: "x" and "y" (K, b, ...); weights: (K, b);
            clip: C; before_clip: called with the per-example gradients before they are clipped.
        """
        return linear_stack_clipped_sum(self.module, params, batch["x"], batch["y"], weights,
                                        clip, before_clip)


def classifier_adapter(model: nn.Module) -> ClassifierAdapter:
    """The adapter of a classifier: with the fast path where it is a Linear stack."""
    return LinearStackAdapter(model) if is_linear_stack(model) else ClassifierAdapter(model)
