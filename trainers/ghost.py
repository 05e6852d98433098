"""The ghost engine: per-example gradient norms and clipped sums without per-example gradients.

For a layer y_t = W a_t (+ b) applied at positions t = 1..T of one example (T = 1 for a plain
vector, the sequence for (B, T, d) inputs, the spatial positions of a convolution's unfolded
patches), the example's weight gradient is sum_t g_t a_t^T with g_t = dL/dy_t. Its squared norm is
    sum_{t,t'} (a_t . a_t') (g_t . g_t')          ("ghost norm", O(T^2 (d_in + d_out)))
or ||G^T A||^2 computed directly (O(T d_in d_out)), whichever is cheaper (Li et al. 2022; Bu et
al. 2023, "book-keeping"). An embedding is the same layer with one-hot inputs: a_t . a_t' is
[id_t = id_t']. The clipped sum is then sum_i c_i G_i^T A_i: one matmul per layer, the same work
as non-private training.

One ordinary forward and backward per row (client or run) records each trainable layer's inputs
and output gradients through module hooks. The engine applies when every trainable parameter
belongs to one such layer (`unsupported` says why not otherwise); a layer called several times
(weights shared across positions or blocks) simply contributes all its calls' positions.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from privbench.models.adapter import Batch, ModelAdapter, Params
from privbench.trainers.aggregation import clip_factor


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


def layers(adapter: ModelAdapter, params: Params) -> list[Layer]:
    """The fast-path layers holding the trainable `params`, in module order."""
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


def _capture(adapter: ModelAdapter, found: list[Layer], row: Params,
             batch: Batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One forward and backward of the sum of the row's per-example losses; for each layer, the
    inputs A (B, T, d_in) (ids (B, T) for embeddings) and output gradients G (B, T, d_out)."""
    inputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(found))}
    outputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(found))}

    def hook(i: int):
        def record(_module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            inputs[i].append(args[0].detach())
            outputs[i].append(out)
        return record

    handles = [layer.module.register_forward_hook(hook(i)) for i, layer in enumerate(found)]
    try:
        with torch.enable_grad():
            p = {n: v.detach().requires_grad_(True) for n, v in row.items()}
            losses = adapter.per_example_loss(p, batch)
            flat = [o for i in range(len(found)) for o in outputs[i]]
            grads = torch.autograd.grad(losses.sum(), flat, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    grads_iter = iter(grads)
    captured = []
    for i, layer in enumerate(found):
        a_parts, g_parts = [], []
        for a, o in zip(inputs[i], outputs[i], strict=True):
            if a.shape[0] != losses.shape[0]:
                raise ValueError(f"layer {layer.path!r} sees inputs of first dimension "
                                 f"{a.shape[0]} in a batch of {losses.shape[0]} examples "
                                 "(its input is not one row per example)")
            g = next(grads_iter)
            g = torch.zeros_like(o) if g is None else g.detach()
            a, g = _as_sequence(layer, a, g)
            a_parts.append(a)
            g_parts.append(g)
        captured.append((torch.cat(a_parts, dim=1), torch.cat(g_parts, dim=1)))
    return captured


def _as_sequence(layer: Layer, a: torch.Tensor,
                 g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and output gradients as (B, T, d) with T the positions the weight is applied at."""
    b = a.shape[0]
    if layer.kind == "conv2d":
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


def _weight_sq(kind: str, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Squared norm of each example's weight gradient sum_t g_t a_t^T, shape (B,)."""
    t = a.shape[1]
    if kind == "embedding":
        same = (a.unsqueeze(2) == a.unsqueeze(1)).to(g.dtype)
        return (same * torch.bmm(g, g.transpose(1, 2))).sum(dim=(1, 2))
    if t == 1:
        return a[:, 0].pow(2).sum(-1) * g[:, 0].pow(2).sum(-1)
    if t * t <= a.shape[2] * g.shape[2]:
        return (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(g, g.transpose(1, 2))).sum((1, 2))
    return torch.bmm(g.transpose(1, 2), a).pow(2).sum(dim=(1, 2))


def _weight_grads(layer: Layer, a: torch.Tensor, g: torch.Tensor,
                  shape: torch.Size) -> torch.Tensor:
    """Each example's weight gradient (B, *shape), materialised (for tests and the probe)."""
    if layer.kind == "embedding":
        out = torch.zeros((a.shape[0], *shape), dtype=g.dtype, device=g.device)
        out.scatter_add_(1, a.unsqueeze(-1).expand_as(g), g)
        return out
    per = torch.einsum("bto,bti->boi", g, a)
    if layer.kind == "conv1d":
        per = per.transpose(1, 2)
    return per.reshape(a.shape[0], *shape)


def _weight_sum(layer: Layer, a: torch.Tensor, g: torch.Tensor,
                shape: torch.Size) -> torch.Tensor:
    """sum_i of the examples' weight gradients (g already scaled by each clip factor)."""
    if layer.kind == "embedding":
        out = torch.zeros(shape, dtype=g.dtype, device=g.device)
        out.index_add_(0, a.flatten(), g.reshape(-1, g.shape[-1]))
        return out
    total = torch.einsum("bto,bti->oi", g, a)
    if layer.kind == "conv1d":
        total = total.t()
    return total.reshape(shape)


def _rows(params: Params) -> int:
    return int(next(iter(params.values())).shape[0])


def _row(tree: dict[str, torch.Tensor], r: int) -> dict[str, torch.Tensor]:
    return {n: v[r] for n, v in tree.items()}


def ghost_norms_and_inputs(adapter: ModelAdapter, found: list[Layer], row: Params,
                           batch: Batch) -> tuple[torch.Tensor, list]:
    """Per-example gradient norms (B,) of one row and the recorded (A, G) of each layer."""
    captured = _capture(adapter, found, row, batch)
    sq = None
    for layer, (a, g) in zip(found, captured, strict=True):
        part = torch.zeros(g.shape[0], dtype=g.dtype, device=g.device)
        if layer.weight is not None:
            part = part + _weight_sq(layer.kind, a, g)
        if layer.bias is not None:
            part = part + g.sum(dim=1).pow(2).sum(-1)
        sq = part if sq is None else sq + part
    return sq.sqrt(), captured


def ghost_clipped_sum(adapter: ModelAdapter, params: Params, batch: Batch, weights: torch.Tensor,
                      *, clip: float) -> tuple[Params, torch.Tensor]:
    """The engine interface's clipped sum by ghost norms and one matmul per layer and row.

    Args:
        adapter: the model; every trainable layer must have a fast path (`unsupported` is None).
        params: name -> (K, ...); batch: name -> (K, b, ...); weights: (K, b).
        clip: the clipping norm C.

    Returns:
        (sums name -> (K, ...), norms (K, b) before clipping).
    """
    found = layers(adapter, params)
    sums: list[Params] = []
    norms = []
    for r in range(_rows(params)):
        row = _row(params, r)
        n, captured = ghost_norms_and_inputs(adapter, found, row, _row(batch, r))
        factor = clip_factor(n, clip) * weights[r]
        out: Params = {}
        for layer, (a, g) in zip(found, captured, strict=True):
            scaled = g * factor.view(-1, 1, 1)
            if layer.weight is not None:
                out[layer.weight] = _weight_sum(layer, a, scaled, row[layer.weight].shape)
            if layer.bias is not None:
                out[layer.bias] = scaled.sum(dim=(0, 1)).reshape(row[layer.bias].shape)
        sums.append(out)
        norms.append(n)
    return {n: torch.stack([s[n] for s in sums]) for n in params}, torch.stack(norms)


def ghost_grads(adapter: ModelAdapter, params: Params, batch: Batch) -> Params:
    """Per-example gradients (K, b, ...) rebuilt from the recorded layer inputs and output
    gradients: what the ghost norms and sums are computed from, materialised to check them."""
    found = layers(adapter, params)
    rows = []
    for r in range(_rows(params)):
        row = _row(params, r)
        captured = _capture(adapter, found, row, _row(batch, r))
        out: Params = {}
        for layer, (a, g) in zip(found, captured, strict=True):
            if layer.weight is not None:
                out[layer.weight] = _weight_grads(layer, a, g, row[layer.weight].shape)
            if layer.bias is not None:
                out[layer.bias] = g.sum(dim=1).reshape(g.shape[0], *row[layer.bias].shape)
        rows.append(out)
    return {n: torch.stack([row[n] for row in rows]) for n in params}
