"""What the ghost engine reads of a model for a batch: each fast-path layer's
(trainers/ghost_layers.py) inputs A and output gradients G, recorded by module hooks.

The layers are those holding trainable parameters: Linear, Conv2d, Embedding and transformers'
Conv1D (peft's LoRA adapters are Linear layers). `capture_rows` records A (K*B, T, d_in) (ids
(K*B, T) for embeddings; a Conv2d called once keeps its input image (K*B, C, H, W) and output
gradient (K*B, C_out, H', W') as they are, unfolded only where the ghost norm needs patches:
`as_sequence`) and G (K*B, T, d_out) for every row (client or run) at once, by the
fastest route that applies: batched matmuls for a Linear stack (the linear-stack fast path of
trainers/dpsgd.py, generalised); one torch.func call, vmap over rows of grad with respect to zero
perturbations of each layer's output, where the model traces; an ordinary forward and backward
per row otherwise. A layer called several times contributes all its calls' positions.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from privbench.models.adapter import Batch, ModelAdapter, Params
from privbench.trainers.ghost_layers import Layer, layer_sequence


def _check_rows(layer: Layer, a: torch.Tensor, b: int, flattened: set[str]) -> None:
    """A layer's input must have one row per example, or B*T rows (flattened (B, T, d))."""
    if a.shape[0] != b and (layer.kind == "conv2d" or a.shape[0] % b):
        raise ValueError(f"layer {layer.path!r} sees inputs of first dimension {a.shape[0]} in "
                         f"a batch of {b} examples (its input is not one row per example)")
    if a.shape[0] != b:  # (B*T, d) flattened from (B, T, d): only a probe can confirm the order
        flattened.add(layer.path)


def _capture(adapter: ModelAdapter, found: list[Layer], row: Params, batch: Batch,
             flattened: set[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One ordinary forward and backward of the sum of one row's per-example losses; for each
    layer, the inputs A (B, T, d_in) (ids (B, T) for embeddings) and output gradients
    G (B, T, d_out), all of the layer's calls side by side along T.

    A layer fed (B*T, d) rows (a model that flattens the sequence before its MLP) is read as
    (B, T, d); its path is added to `flattened`, since only a probe against a reference engine
    can confirm that the rows are grouped by example."""
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
            grads = iter(torch.autograd.grad(losses.sum(), flat, allow_unused=True))
    finally:
        for h in handles:
            h.remove()
    b = int(losses.shape[0])
    captured = []
    for i, layer in enumerate(found):
        a_parts, g_parts = [], []
        for a, o in zip(inputs[i], outputs[i], strict=True):
            _check_rows(layer, a, b, flattened)
            g = next(grads)
            a, g = layer_sequence(layer, a, torch.zeros_like(o) if g is None else g.detach(), b,
                                raw=len(inputs[i]) == 1)
            a_parts.append(a)
            g_parts.append(g)
        captured.append((_cat(a_parts, dim=1), _cat(g_parts, dim=1)))
    return captured


# Modules whose forward torch.func cannot trace over rows: the row loop serves them.
_ROWS_LOOP: weakref.WeakSet = weakref.WeakSet()
# Per module: the (layer, output shape) of each hooked call, by batch shapes (from a dry run).
_CALLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _calls(adapter: ModelAdapter, found: list[Layer], row: Params,
           batch: Batch) -> list[tuple[int, torch.Size]]:
    """The layer and output shape of every hooked call of one row's forward, in call order."""
    key = tuple((n, tuple(v.shape)) for n, v in batch.items())
    cache = _CALLS.setdefault(adapter.module, {})
    if key in cache:
        return cache[key]
    calls: list[tuple[int, torch.Size]] = []

    def hook(i: int):
        def record(_module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
            calls.append((i, out.shape))
        return record

    handles = [layer.module.register_forward_hook(hook(i)) for i, layer in enumerate(found)]
    try:
        with torch.no_grad():
            adapter.per_example_loss(row, batch)
    finally:
        for h in handles:
            h.remove()
    cache[key] = calls
    return calls


def _capture_vmap(adapter: ModelAdapter, found: list[Layer], params: Params,
                       batch: Batch, flattened: set[str]) -> list[tuple[torch.Tensor,
                                                                        torch.Tensor]]:
    """`_capture` for every row at once: torch.func `vmap` over rows of `grad` with respect to
    zero perturbations added to each hooked layer's output (the gradient with respect to a
    layer's output is the gradient with respect to a perturbation of it). Rows are merged into
    the example dimension: A (K*B, T, d_in), G (K*B, T, d_out)."""
    k, b = _rows(params), int(next(iter(batch.values())).shape[1])
    calls = _calls(adapter, found, _row(params, 0), _row(batch, 0))
    state: dict = {}

    def hook(i: int):
        def perturb(_module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            j = len(state["inputs"])
            if j >= len(calls) or calls[j][0] != i:
                raise RuntimeError("the layers are called in a data-dependent order")
            state["inputs"].append(args[0])
            return out + state["deltas"][j]
        return perturb

    def row_loss(deltas: list[torch.Tensor], p: Params, rows: Batch):
        state.update(deltas=deltas, inputs=[])
        total = adapter.per_example_loss(p, rows).sum()
        return total, tuple(state["inputs"])

    zeros = [torch.zeros((k, *shape), dtype=next(iter(params.values())).dtype)
             for _, shape in calls]
    handles = [layer.module.register_forward_hook(hook(i)) for i, layer in enumerate(found)]
    try:
        grads, inputs = vmap(grad(row_loss, has_aux=True))(zeros, params, batch)
    finally:
        for h in handles:
            h.remove()
    if len(inputs) != len(calls):
        raise RuntimeError("the layers are called a data-dependent number of times")
    parts: dict[int, tuple[list, list]] = {i: ([], []) for i in range(len(found))}
    n_calls = [sum(1 for j, _ in calls if j == i) for i in range(len(found))]
    for (i, _), a, g in zip(calls, inputs, grads, strict=True):
        _check_rows(found[i], a[0], b, flattened)
        a, g = layer_sequence(found[i], a.flatten(0, 1), g.flatten(0, 1), k * b,
                            raw=n_calls[i] == 1)
        parts[i][0].append(a)
        parts[i][1].append(g)
    return [(_cat(parts[i][0], dim=1), _cat(parts[i][1], dim=1)) for i in range(len(found))]


def rows_vectorised(adapter: ModelAdapter) -> bool:
    """False once the model's rows had to be taken one by one (torch.func cannot trace it)."""
    return adapter.module not in _ROWS_LOOP


# Layers without parameters that act on each example independently.
ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Identity)


def is_linear_stack(adapter: ModelAdapter) -> bool:
    """A classifier that is an nn.Sequential of Linear layers and element-wise activations."""
    from privbench.models.adapter import ClassifierAdapter

    model = adapter.module
    return type(adapter) is ClassifierAdapter and isinstance(model, nn.Sequential) and all(
        isinstance(m, (nn.Linear, *ELEMENTWISE)) for m in model)


def _capture_linear_stack(adapter: ModelAdapter, found: list[Layer], params: Params,
                          batch: Batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`_capture` of every row of a Linear stack at once, by batched matmuls over the rows (the
    linear-stack fast path of trainers/dpsgd.py, generalised to any trainable subset): the
    same inputs and output gradients, merged (K*B, 1, d)."""
    by_module = {id(layer.module): layer for layer in found}
    x, y = batch["x"], batch["y"]
    k, b = y.shape
    inputs, outputs = [], []
    with torch.enable_grad():
        h = x
        for layer in adapter.module:
            if not isinstance(layer, nn.Linear):
                h = layer(h)
                continue
            spec = by_module.get(id(layer))
            w = params[spec.weight] if spec is not None and spec.weight else \
                layer.weight.detach().expand(k, *layer.weight.shape)
            bias = params[spec.bias] if spec is not None and spec.bias else (
                None if layer.bias is None else layer.bias.detach().expand(k, *layer.bias.shape))
            if spec is not None:
                inputs.append(h.detach())
            h = torch.bmm(h, w.transpose(1, 2)) if bias is None else torch.baddbmm(
                bias.unsqueeze(1), h, w.transpose(1, 2))
            if spec is not None:
                if not h.requires_grad:
                    h.requires_grad_(True)
                outputs.append(h)
        losses = F.cross_entropy(h.flatten(0, 1), y.flatten(), reduction="none")
        grads = torch.autograd.grad(losses.sum(), outputs)
    return [(a.reshape(k * b, 1, -1), g.reshape(k * b, 1, -1))
            for a, g in zip(inputs, grads, strict=True)]


def capture_rows(adapter: ModelAdapter, found: list[Layer], params: Params, batch: Batch,
                  flattened: set[str] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every row's layer inputs and output gradients, rows merged: (K*B, T, d) each. A Linear
    stack takes batched matmuls; several rows of another model go through one vectorised call
    where torch.func traces it, else row by row."""
    flattened = set() if flattened is None else flattened
    if is_linear_stack(adapter) and batch["x"].dim() == 3:
        return _capture_linear_stack(adapter, found, params, batch)
    if _rows(params) > 1 and adapter.module not in _ROWS_LOOP:
        try:
            return _capture_vmap(adapter, found, params, batch, flattened)
        except Exception:  # not traceable over rows (or a layer misread): take the row loop
            _ROWS_LOOP.add(adapter.module)
    rows = [_capture(adapter, found, _row(params, r), _row(batch, r), flattened)
            for r in range(_rows(params))]
    return [(_cat([row[i][0] for row in rows]), _cat([row[i][1] for row in rows]))
            for i in range(len(found))]


def _cat(parts: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _rows(params: Params) -> int:
    return int(next(iter(params.values())).shape[0])


def _row(tree: dict[str, torch.Tensor], r: int) -> dict[str, torch.Tensor]:
    return {n: v[r] for n, v in tree.items()}
