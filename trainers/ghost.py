"""The ghost engine: per-example gradient norms and clipped sums without per-example gradients.

For a layer y_t = W a_t (+ b) applied at positions t = 1..T of one example (T = 1 for a plain
vector, the sequence for (B, T, d) inputs, the spatial positions of a convolution's unfolded
patches), the example's weight gradient is sum_t g_t a_t^T with g_t = dL/dy_t. Its squared norm is
    sum_{t,t'} (a_t . a_t') (g_t . g_t')          ("ghost norm", O(T^2 (d_in + d_out)))
or ||G^T A||^2 computed directly (O(T d_in d_out)), whichever is cheaper per layer (Li et al.
2022; Bu et al. 2023, "book-keeping"). An embedding is the same layer with one-hot inputs:
a_t . a_t' is [id_t = id_t']. The clipped sum is then sum_i c_i G_i^T A_i: one matmul per layer,
the same work as non-private training. A Conv2d whose per-example gradients are the cheaper form
gets them from the convolution's own weight-gradient kernel with the examples as groups, from
its input image and output gradient: no unfolded patches (`_conv_grads`), about 3x faster than
unfold and a batched matmul for the digits CNN's second layer.

The layers' inputs and output gradients are recorded by `ghost_capture`. The engine applies when
every trainable parameter belongs to one such layer (`unsupported` says why not otherwise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from privbench.models.adapter import Batch, ModelAdapter, Params
from privbench.trainers.aggregation import clip_factor
from privbench.trainers.ghost_capture import capture_rows, rows_vectorised
from privbench.trainers.ghost_layers import Layer, as_sequence, is_image, layers, unsupported

if TYPE_CHECKING:
    from privbench.trainers.per_example import BeforeClip

__all__ = ["ghost_clipped_sum", "ghost_grads", "layers", "rows_vectorised", "unsupported"]


def _instantiates(layer: Layer, a: torch.Tensor, g: torch.Tensor) -> bool:
    """Whether the per-example weight gradients G^T A (B, d_out, d_in) are cheaper to form than
    the ghost norm: T (d_in + d_out) > d_in d_out. They are then kept for the clipped sum."""
    if layer.kind == "embedding":
        return False
    if is_image(layer, a):  # T output positions, d_in = C_in kh kw patch entries
        kh, kw = layer.module.kernel_size
        t, d_in, d_out = g.shape[2] * g.shape[3], a.shape[1] * kh * kw, g.shape[1]
    else:
        t, d_in, d_out = a.shape[1], a.shape[2], g.shape[2]
    return t > 1 and t * (d_in + d_out) > d_in * d_out


def _conv_grads(layer: Layer, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Each example's Conv2d weight gradient (B, C_out, C_in kh kw) from its input image
    (B, C_in, H, W) and output gradient (B, C_out, H', W'): the convolution's weight-gradient
    kernel run once with the B examples as groups (example b's output channels see only its
    input channels), so no patches are unfolded."""
    m = layer.module
    b, c_in, c_out = a.shape[0], a.shape[1], g.shape[1]
    kh, kw = m.kernel_size
    per = torch.ops.aten.convolution_backward(
        g.reshape(1, b * c_out, *g.shape[2:]), a.reshape(1, b * c_in, *a.shape[2:]),
        a.new_empty((b * c_out, c_in, kh, kw)), None, list(m.stride), list(m.padding),
        list(m.dilation), False, [0, 0], b, [False, True, False])[1]
    return per.reshape(b, c_out, c_in * kh * kw)


def _bias_grads(g: torch.Tensor) -> torch.Tensor:
    """Each example's bias gradient (B, d_out): its output gradient summed over positions."""
    return g.sum(dim=(2, 3)) if g.dim() == 4 else g.sum(dim=1)


def _weight_sq(kind: str, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Squared norm of each example's weight gradient sum_t g_t a_t^T by the ghost norm, (B,)."""
    if kind == "embedding":
        same = (a.unsqueeze(2) == a.unsqueeze(1)).to(g.dtype)
        return (same * torch.bmm(g, g.transpose(1, 2))).sum(dim=(1, 2))
    if a.shape[1] == 1:
        return a[:, 0].pow(2).sum(-1) * g[:, 0].pow(2).sum(-1)
    return (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(g, g.transpose(1, 2))).sum((1, 2))


def _weight_grads(layer: Layer, a: torch.Tensor, g: torch.Tensor,
                  shape: torch.Size) -> torch.Tensor:
    """Each example's weight gradient (B, *shape), materialised (for tests and the probe)."""
    if is_image(layer, a):
        return _conv_grads(layer, a, g).reshape(a.shape[0], *shape)
    if layer.kind == "embedding":
        out = torch.zeros((a.shape[0], *shape), dtype=g.dtype, device=g.device)
        out.scatter_add_(1, a.unsqueeze(-1).expand_as(g), g)
        return out
    per = torch.einsum("bto,bti->boi", g, a)
    if layer.kind == "conv1d":
        per = per.transpose(1, 2)
    return per.reshape(a.shape[0], *shape)


def _weight_sums(layer: Layer, a: torch.Tensor, g: torch.Tensor, k: int,
                 shape: torch.Size) -> torch.Tensor:
    """Each row's sum of its examples' weight gradients (K, *shape), from merged A and G
    (K*B, T, ...) with g already scaled by each example's clip factor."""
    if layer.kind == "embedding":
        vocab = shape[0]
        ids = a.reshape(k, -1) + vocab * torch.arange(k, device=a.device).unsqueeze(1)
        out = torch.zeros((k * vocab, *shape[1:]), dtype=g.dtype, device=g.device)
        out.index_add_(0, ids.flatten(), g.reshape(-1, g.shape[-1]))
        return out.reshape(k, *shape)
    # Splitting the merged first dimension is a view: no copy of the (often strided) patches.
    total = torch.einsum("kbto,kbti->koi", g.reshape(k, -1, *g.shape[1:]),
                         a.reshape(k, -1, *a.shape[1:]))
    if layer.kind == "conv1d":
        total = total.transpose(1, 2)
    return total.reshape(k, *shape)


def _norms(found: list[Layer], captured: list[tuple[torch.Tensor, torch.Tensor]],
           ) -> tuple[torch.Tensor, list[torch.Tensor | None],
                      list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per-example gradient norms (K*B,) from each layer's recorded A and G; per layer, the
    per-example weight gradients (K*B, d_out, d_in) where forming them was the cheaper way to
    the norm (None where the ghost norm was); and the captures, a Conv2d's unfolded where its
    ghost norm needed the patches."""
    sq, kept, used = None, [], []
    for layer, (a, g) in zip(found, captured, strict=True):
        part = torch.zeros(g.shape[0], dtype=g.dtype, device=g.device)
        per = None
        if layer.weight is not None:
            if _instantiates(layer, a, g) and is_image(layer, a):
                per = _conv_grads(layer, a, g)  # its norm without a squared copy (3x faster)
                part = part + torch.linalg.vector_norm(per, dim=(1, 2)).square()
            elif _instantiates(layer, a, g):
                per = torch.bmm(g.transpose(1, 2), a)
                part = part + per.pow(2).sum(dim=(1, 2))
            else:
                a, g = as_sequence(layer, a, g)
                part = part + _weight_sq(layer.kind, a, g)
        if layer.bias is not None:
            part = part + _bias_grads(g).pow(2).sum(-1)
        sq = part if sq is None else sq + part
        kept.append(per)
        used.append((a, g))
    return sq.sqrt(), kept, used


def ghost_clipped_sum(adapter: ModelAdapter, params: Params, batch: Batch, weights: torch.Tensor,
                      *, clip: float, before_clip: BeforeClip | None = None,
                      ) -> tuple[Params, torch.Tensor]:
    """The engine interface's clipped sum by ghost norms and one matmul per layer.

    Args:
        adapter: the model; every trainable layer must have a fast path (`unsupported` is None).
        params: name -> (K, ...); batch: name -> (K, b, ...); weights: (K, b).
        clip: the clipping norm C.
        before_clip: sets chosen rows' gradients before clipping (their recorded output
            gradients are zeroed; their norms and clipped gradients come from the hook; the
            model runs on its `model_width` leading columns only).

    Returns:
        (sums name -> (K, ...), norms (K, b) before clipping).
    """
    found = layers(adapter, params)
    k, cols = weights.shape
    b = cols if before_clip is None else min(cols, before_clip.model_width)  # canaries after
    captured = capture_rows(adapter, found, params,
                            batch if b == cols else {n: v[:, :b] for n, v in batch.items()})
    if before_clip is not None:
        real = (~before_clip.rows[:, :b]).to(weights.dtype)
        captured = [(a, g * real.reshape(-1, *[1] * (g.dim() - 1))) for a, g in captured]
    norms, kept, captured = _norms(found, captured)
    norms = torch.nn.functional.pad(norms.reshape(k, b), (0, cols - b))  # no model past b
    if before_clip is not None:
        norms = before_clip.norms(norms)
    all_factors = clip_factor(norms, clip) * weights  # (K, cols): every row, one rule
    factor = all_factors[:, :b].reshape(-1)
    sums: Params = {}
    for layer, (a, g), per in zip(found, captured, kept, strict=True):
        scaled = None if is_image(layer, a) else g * factor.view(-1, 1, 1)
        if layer.weight is not None:
            shape = params[layer.weight].shape[1:]
            if per is None:
                sums[layer.weight] = _weight_sums(layer, a, scaled, k, shape)
            else:  # the kept per-example gradients, weighted: a batched matrix-vector product
                total = torch.einsum("kb,kboi->koi", factor.view(k, b), per.view(k, b,
                                                                                 *per.shape[1:]))
                if layer.kind == "conv1d":
                    total = total.transpose(1, 2)
                sums[layer.weight] = total.reshape(k, *shape)
        if layer.bias is not None and scaled is None:  # an image's output gradient
            sums[layer.bias] = torch.einsum("kb,kbo->ko", factor.view(k, b),
                                            _bias_grads(g).view(k, b, -1)).reshape(
                params[layer.bias].shape)
        elif layer.bias is not None:
            sums[layer.bias] = scaled.reshape(k, -1, g.shape[-1]).sum(1).reshape(
                params[layer.bias].shape)
    if before_clip is not None:
        before_clip.add_clipped(sums, all_factors)
    return {n: sums[n] for n in params}, norms


def ghost_grads(adapter: ModelAdapter, params: Params, batch: Batch,
                flattened: set[str] | None = None) -> Params:
    """Per-example gradients (K, b, ...) rebuilt from the recorded layer inputs and output
    gradients: what the ghost norms and sums are computed from, materialised to check them.
    Paths of layers that saw flattened (B*T, d) inputs are added to `flattened`."""
    found = layers(adapter, params)
    k = int(next(iter(params.values())).shape[0])
    b = int(next(iter(batch.values())).shape[1])
    out: Params = {}
    for layer, (a, g) in zip(found, capture_rows(adapter, found, params, batch, flattened),
                             strict=True):
        if layer.weight is not None:
            shape = params[layer.weight].shape[1:]
            out[layer.weight] = _weight_grads(layer, a, g, shape).reshape(k, b, *shape)
        if layer.bias is not None:
            out[layer.bias] = _bias_grads(g).reshape(k, b, *params[layer.bias].shape[1:])
    return {n: out[n] for n in params}
