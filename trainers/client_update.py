"""Local SGD on many clients at once: one batched model through torch.func, not a Python loop.

Clients hold different numbers of records. Each client's data is padded to the largest shard and
each minibatch carries a weight mask, so a client takes exactly ceil(n_i / B) steps an epoch over
its own records; steps past its end have zero weight and leave its parameters unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

Params = dict[str, torch.Tensor]


def stack_params(params: Params, k: int) -> Params:
    """Copy one set of parameters into a batch of `k` independent copies."""
    return {name: p.detach().unsqueeze(0).expand(k, *p.shape).clone() for name, p in params.items()}


def local_sgd(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
              counts: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
              generator: torch.Generator,
              batched_params: bool = False) -> tuple[Params, torch.Tensor]:
    """Run `epochs` of minibatch SGD on each of K clients from the same starting `params`.

    With `batched_params`, `params` already holds one starting point per row, each (K, ...):
    many independent models (e.g. shadow models, each with its own global state) train at once.

    x: (K, n_max, ...) padded records; y: (K, n_max) labels; counts: (K,) real record counts.
    Returns the per-client updates (trained minus start), each (K, ...), and each client's mean
    training loss over its steps.
    """
    k, n_max = y.shape
    stacked = ({name: p.detach().clone() for name, p in params.items()} if batched_params
               else stack_params(params, k))
    start = {name: p.clone() for name, p in stacked.items()}
    arange_k = torch.arange(k).unsqueeze(1)
    valid = torch.arange(n_max).unsqueeze(0) < counts.unsqueeze(1)

    def batch_loss(p: Params, xb: torch.Tensor, yb: torch.Tensor,
                   wb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = functional_call(model, p, (xb,))
        losses = F.cross_entropy(logits, yb, reduction="none")
        total = (losses * wb).sum()
        return total / wb.sum().clamp(min=1.0), total

    step = vmap(grad(batch_loss, has_aux=True))
    loss_sum = torch.zeros(k)
    seen = torch.zeros(k)
    steps_per_epoch = math.ceil(n_max / batch_size)
    for _ in range(epochs):
        keys = torch.rand(k, n_max, generator=generator).masked_fill(~valid, 2.0)
        order = keys.argsort(dim=1)
        for s in range(steps_per_epoch):
            idx = order[:, s * batch_size:(s + 1) * batch_size]
            pos = torch.arange(s * batch_size, s * batch_size + idx.shape[1]).unsqueeze(0)
            wb = (pos < counts.unsqueeze(1)).to(x.dtype)
            if not bool(wb.any()):
                break
            grads, total = step(stacked, x[arange_k, idx], y[arange_k, idx], wb)
            with torch.no_grad():
                for name in stacked:
                    stacked[name] -= lr * grads[name]
            loss_sum += total.detach()
            seen += wb.sum(dim=1)
    updates = {name: stacked[name] - start[name] for name in stacked}
    return updates, loss_sum / seen.clamp(min=1.0)
