"""The hooks engine: per-example gradients from Opacus's `GradSampleModule` module hooks.

For models that torch.func cannot trace (data-dependent Python control flow in the forward, such
as trimming a batch's padding by its longest sequence), the forward runs as an ordinary batched
forward and Opacus computes each trainable layer's per-sample gradients from the activations and
backpropagated gradients its hooks record (and vmaps single layers it has no rule for). Rows
(clients or independent runs) are loaded into the module one at a time.

Opacus only records in training mode, so the layers holding trainable parameters are switched to
training mode for the call and back afterwards; every other module (dropout) keeps its mode, so
the loss is still the eval-mode loss the other engines differentiate.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from privbench.models.adapter import Batch, ModelAdapter, Params


def hooks_grads(adapter: ModelAdapter, params: Params, batch: Batch) -> Params:
    """Every example's gradient, name -> (K, b, ...), by Opacus per-sample gradient hooks.

    Args:
        adapter: the model (its module's weights are restored after the call).
        params: name -> (K, ...) trainable parameters, one set per row.
        batch: name -> (K, b, ...) each row's examples.

    Returns:
        name -> (K, b, ...) per-example gradients.
    """
    from opacus import GradSampleModule

    module = adapter.module
    own = dict(module.named_parameters())
    saved = {n: own[n].detach().clone() for n in params}
    leaves = [m for m in module.modules()
              if any(p.requires_grad for p in m.parameters(recurse=False))]
    modes = [m.training for m in leaves]
    logger = logging.getLogger("opacus")
    level = logger.level
    logger.setLevel(logging.ERROR)  # non-strict mode logs each buffer it meets
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapped = GradSampleModule(module, batch_first=True, loss_reduction="sum",
                                       strict=False)
    finally:
        logger.setLevel(level)
    # Opacus gives an embedding's padding row a per-sample gradient; autograd gives it none.
    padding = {f"{path}.weight": m.padding_idx for path, m in module.named_modules()
               if isinstance(m, nn.Embedding) and m.padding_idx is not None}
    width = int(next(iter(batch.values())).shape[1])
    # Position and token-type ids are often (1, T), broadcast over the batch; Opacus needs one
    # row per example, so such inputs are expanded to (B, T) (the same embeddings per example).
    expand = [m.register_forward_pre_hook(_expand_shared_ids(width)) for m in leaves
              if isinstance(m, nn.Embedding)]
    rows = []
    try:
        for m in leaves:
            m.training = True
        k = int(next(iter(params.values())).shape[0])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for r in range(k):
                rows.append(_one_row(adapter, own, {n: p[r] for n, p in params.items()},
                                     {n: v[r] for n, v in batch.items()}, padding))
    finally:
        for m, mode in zip(leaves, modes, strict=True):
            m.training = mode
        wrapped.remove_hooks()
        for handle in expand:
            handle.remove()
        with torch.no_grad():
            for n, value in saved.items():
                own[n].copy_(value)
        for p in own.values():
            p.grad = None
            p.grad_sample = None
    return {n: torch.stack([row[n] for row in rows]) for n in params}


def _expand_shared_ids(width: int):
    def hook(_module: nn.Module, args: tuple) -> tuple | None:
        ids = args[0]
        if isinstance(ids, torch.Tensor) and ids.dim() >= 1 and ids.shape[0] == 1 and width > 1:
            return (ids.expand(width, *ids.shape[1:]), *args[1:])
        return None
    return hook


def _one_row(adapter: ModelAdapter, own: dict[str, nn.Parameter], row: Params, batch: Batch,
             padding: dict[str, int]) -> Params:
    with torch.no_grad():
        for n, value in row.items():
            own[n].copy_(value)
    for p in own.values():
        p.grad = None
        p.grad_sample = None
    b = int(next(iter(batch.values())).shape[0])
    with torch.enable_grad():
        adapter.per_example_loss({n: own[n] for n in row}, batch).sum().backward()
    out, totals = {}, {}
    for n in row:
        p = own[n]
        g = p.grad_sample
        if isinstance(g, list):
            g = torch.stack(g).sum(dim=0)
        g = torch.zeros((b, *p.shape), dtype=p.dtype) if g is None else g.detach().clone()
        if n in padding:
            g[:, padding[n]] = 0.0
        out[n] = g
        totals[n] = torch.zeros_like(p) if p.grad is None else p.grad
    # The per-sample gradients must add up to the batch gradient; they do not when a parameter
    # is used outside its module's forward, where no hook sees it.
    scale = max(float(t.abs().max()) for t in totals.values())
    for n, g in out.items():
        if not torch.allclose(g.sum(dim=0), totals[n], rtol=1e-3, atol=1e-5 * scale + 1e-12):
            raise RuntimeError(f"Opacus hooks miss part of the gradient of {n!r} (used outside "
                               "its module's forward?)")
    return out
