"""The layers the ghost engine reads of a model, and their captures' shapes: the Linear, Conv2d,
Embedding and transformers Conv1D layers holding trainable parameters (found once per model and
cached), why a layer is off the fast path, and a capture as (B, T, d) inputs and output gradients (a
Conv2d's image unfolded into patches only where the ghost norm needs them)."""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from privbench.models.adapter import ModelAdapter, Params


@dataclass(frozen=True)
class Layer:
    """A trainable layer with a fast path: its module, kind and trainable parameters' names."""

    path: str
    module: nn.Module
    kind: str  # "linear", "conv1d" (transformers, weight (in, out)), "conv2d", "embedding"
    weight: str | None
    bias: str | None


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, nn.Conv2d):
        return "conv2d"
    if "transformers" in sys.modules:  # a transformers Conv1D can only exist if it is imported
        from transformers.pytorch_utils import Conv1D

        if isinstance(module, Conv1D):
            return "conv1d"
    return None


def _why_not(module: nn.Module, kind: str) -> str | None:
    """Why a layer of a supported type still has no fast path here (None: it has one)."""
    if kind == "conv2d" and (module.groups != 1 or module.padding_mode != "zeros"
                             or isinstance(module.padding, str)):
        return "grouped, non-zero-padded or 'same'-padded Conv2d"
    if kind == "embedding" and (module.max_norm is not None or module.scale_grad_by_freq):
        return "Embedding with max_norm or scale_grad_by_freq"
    return None


_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def layers(adapter: ModelAdapter, params: Params) -> list[Layer]:
    """The fast-path layers holding the trainable `params`, in module order (cached per module
    and parameter names: every step of a training run asks for the same)."""
    key = tuple(params)
    cached = _LAYERS.get(adapter.module)
    if cached is not None and cached[0] == key:
        return cached[1]
    found = _find_layers(adapter, params)
    _LAYERS[adapter.module] = (key, found)
    return found


def _find_layers(adapter: ModelAdapter, params: Params) -> list[Layer]:
    names = {id(p): n for n, p in adapter.module.named_parameters()}
    out = []
    for path, module in adapter.module.named_modules():
        own = {pn: names.get(id(p)) for pn, p in module.named_parameters(recurse=False)}
        trainable = {pn: n for pn, n in own.items() if n in params}
        kind = _kind(module)
        if trainable and kind is not None:
            out.append(Layer(path, module, kind, trainable.get("weight"), trainable.get("bias")))
    return out


def unsupported(adapter: ModelAdapter, params: Params) -> str | None:
    """Why the ghost engine cannot run on this model, in a few words; None when it can."""
    uses: dict[int, int] = {}
    for _, p in adapter.module.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    by_name = dict(adapter.module.named_parameters())
    for path, module in adapter.module.named_modules():
        own = [(pn, p) for pn, p in module.named_parameters(recurse=False)
               if any(p is by_name.get(n) for n in params)]
        if not own:
            continue
        kind = _kind(module)
        label = f"layer {path!r} ({type(module).__name__})"
        if kind is None:
            return f"{label} has no ghost-norm fast path"
        if (reason := _why_not(module, kind)) is not None:
            return f"{label} is a {reason}"
        if any(pn not in ("weight", "bias") for pn, _ in own):
            return f"{label} holds parameters other than weight and bias"
        if any(uses[id(p)] > 1 for _, p in own):
            return f"{label} shares a parameter with another layer (tied weights)"
    covered = {n for layer in layers(adapter, params) for n in (layer.weight, layer.bias) if n}
    if missing := [n for n in params if n not in covered]:
        return f"parameter {missing[0]!r} belongs to no layer"
    return None


def is_image(layer: Layer, a: torch.Tensor) -> bool:
    """Whether a Conv2d's capture is its input image (B, C, H, W), not unfolded patches."""
    return layer.kind == "conv2d" and a.dim() == 4


def as_sequence(layer: Layer, a: torch.Tensor,
                g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A capture as (B, T, d) inputs and output gradients (a Conv2d's image unfolded)."""
    if not is_image(layer, a):
        return a, g
    return layer_sequence(layer, a, g, a.shape[0])


def layer_sequence(layer: Layer, a: torch.Tensor, g: torch.Tensor,
                 b: int, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and output gradients as (B, T, d) with T the positions the weight is applied at;
    with `raw`, a Conv2d's as they are (B, C, H, W) (`is_image`)."""
    if layer.kind == "conv2d":
        if raw:
            return a, g
        m = layer.module
        patches = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=m.padding,
                           stride=m.stride)  # (B, C*kh*kw, L)
        return patches.transpose(1, 2), g.flatten(start_dim=2).transpose(1, 2)
    if layer.kind == "embedding":
        ids = a.reshape(b, -1)
        g = g.reshape(b, ids.shape[1], -1)
        if layer.module.padding_idx is not None:  # the padding row gets no gradient
            g = g * (ids != layer.module.padding_idx).unsqueeze(-1).to(g.dtype)
        return ids, g
    return a.reshape(b, -1, a.shape[-1]), g.reshape(b, -1, g.shape[-1])
