"""Local training on many clients at once: one batched model through torch.func, not a Python loop.

Clients hold different numbers of records. Each client's data is padded to the largest shard and
each minibatch carries a weight mask, so a client takes exactly ceil(n_i / B) steps an epoch over
its own records; steps past its end have zero weight and leave its parameters (and, under Adam,
its moments) unchanged. The model is any `ModelAdapter`: its per-example loss is vmapped over the
clients (rows), which may also be independent runs (shadow models) with their own parameters. A
model whose forward torch.func's vmap cannot trace (data-dependent control flow, as some encoder
models have) takes the same steps row by row (`vmap_traces`, checked before the first round).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.func import grad, vmap

from privbench.models.adapter import Batch, ModelAdapter, Params
from privbench.trainers.client_data import ClientData, gather
from privbench.trainers.optim import RowOptimizer

if TYPE_CHECKING:  # dpsgd imports this module (row_states)
    from privbench.trainers.dpsgd import CanaryLayout, GradientCanaries


def stack_params(params: Params, k: int) -> Params:
    """Copy one set of parameters into a batch of `k` independent copies."""
    return {name: p.detach().unsqueeze(0).expand(k, *p.shape).clone() for name, p in params.items()}


def row_states(params: Params, k: int, batched_params: bool, optimizer: str,
               lr: float) -> tuple[Params, Params, RowOptimizer]:
    """The K rows' training state, as local SGD and DP-SGD both start a round.

    Args:
        params: one starting point (each (...)), or with `batched_params` one per row (K, ...).
        k: the rows; batched_params: whether `params` is already stacked.
        optimizer, lr: the rows' optimizer ("sgd" or "adam", fresh state) and learning rate.
    Returns:
        (the rows' parameters, trained in place; a copy of their start; the rows' optimizer).
    """
    stacked = ({name: p.detach().clone() for name, p in params.items()} if batched_params
               else stack_params(params, k))
    start = {name: p.clone() for name, p in stacked.items()}
    return stacked, start, RowOptimizer(optimizer, stacked, lr, rows=k)


def minibatch_gradient(adapter: ModelAdapter, params: Params, batch: Batch) -> Params:
    """The gradient of the mean loss of one minibatch (name -> (N, ...)) at `params`, as local
    SGD takes it (zero for a parameter the loss does not reach).

    Args:
        adapter: the model; params: one parameter set (name -> tensor); batch: its records.
    Returns:
        name -> the gradient, shaped like `params[name]`.
    """
    n = len(next(iter(batch.values())))
    grads, _ = grad(_batch_loss(adapter), has_aux=True)(params, batch, torch.ones(n))
    return grads


def _batch_loss(adapter: ModelAdapter, dirac: CanaryLayout | None = None, norm: float = 0.0):
    """The weighted mean loss of one row's minibatch (and its records' weighted sum, as aux).

    With `dirac` the minibatch may also hold the audit's gradient canaries (weights `wc` (m,)):
    records whose loss is linear along their coordinate (`CanaryLayout.linear_loss`), counted
    in the mean like any record."""

    def batch_loss(p: Params, batch: Batch, wb: torch.Tensor, *wc: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        total = (adapter.per_example_loss(p, batch) * wb).sum()
        if dirac is None:
            return total / wb.sum().clamp(min=1.0), total
        loss = total + dirac.linear_loss(p, wc[0], norm)
        return loss / (wb.sum() + wc[0].sum()).clamp(min=1.0), total

    return batch_loss


def vmap_traces(adapter: ModelAdapter, params: Params, batch: Batch) -> bool:
    """Whether vmap over rows of the adapter's minibatch gradient runs (probed on `batch`'s
    first row, two examples). Models it cannot trace train row by row instead."""
    probe = {n: v[:1, :2] for n, v in batch.items()}
    rows = {n: p.detach().unsqueeze(0) for n, p in params.items()}
    try:
        width = int(next(iter(probe.values())).shape[1])
        vmap(grad(_batch_loss(adapter), has_aux=True))(rows, probe, torch.ones(1, width))
    except Exception:  # any failure to trace means "row by row", never a crash
        return False
    return True


def _row_by_row(fn):
    """`vmap(fn)` as a Python loop over rows, for models vmap cannot trace."""

    def looped(p: Params, batch: Batch, *per_row: torch.Tensor):
        outs = [fn({n: v[k] for n, v in p.items()}, {n: v[k] for n, v in batch.items()},
                   *(t[k] for t in per_row))
                for k in range(per_row[0].shape[0])]
        grads = {n: torch.stack([o[0][n] for o in outs]) for n in p}
        return grads, torch.stack([o[1] for o in outs])

    return looped


def local_sgd(adapter: ModelAdapter, params: Params, data: ClientData, *, epochs: int,
              batch_size: int, lr: float, generator: torch.Generator, optimizer: str = "sgd",
              batched_params: bool = False, vectorised: bool = True,
              canaries: GradientCanaries | None = None) -> tuple[Params, torch.Tensor]:
    """Run `epochs` of minibatch SGD (or Adam, fresh state) on each of K clients.

    Args:
        adapter: the model.
        params: the starting point, shared (each (...)) or, with `batched_params`, one per row
            (each (K, ...)): many independent models (e.g. shadow models) train at once.
        data: the K clients' padded records and counts.
        epochs, batch_size, lr: the local plan; optimizer: "sgd" or "adam".
        generator: the stream of the minibatch order.
        vectorised: vmap over the rows (False: the same steps row by row; see `vmap_traces`).
        canaries: the audit's Dirac gradient canaries of these K clients: records of theirs,
            shuffled into the minibatches with the real ones (their columns follow the
            records'), whose gradient is the Dirac vector (an audit of a run without DP).
    Returns:
        The per-client updates (trained minus start), each (K, ...), and each client's mean
        training loss over its steps.
    """
    k, n_max = data.n_clients, data.n_max
    stacked, start, opt = row_states(params, k, batched_params, optimizer, lr)
    valid, counts = data.valid(), data.counts
    layout = None
    if canaries is not None:  # canary j of client k is its record n_max + j
        valid = torch.cat([valid, canaries.present], dim=1)
        counts = counts + canaries.present.sum(dim=1)
        layout = canaries.layout(stacked)
    width = valid.shape[1]

    row_grad = grad(_batch_loss(adapter, layout, canaries.norm if canaries else 0.0),
                    has_aux=True)
    step = vmap(row_grad) if vectorised else _row_by_row(row_grad)
    loss_sum = torch.zeros(k)
    seen = torch.zeros(k)
    steps_per_epoch = math.ceil(width / batch_size)
    dtype = next(iter(stacked.values())).dtype
    for _ in range(epochs):
        keys = torch.rand(k, width, generator=generator).masked_fill(~valid, 2.0)
        order = keys.argsort(dim=1)
        for s in range(steps_per_epoch):
            idx = order[:, s * batch_size:(s + 1) * batch_size]
            pos = torch.arange(s * batch_size, s * batch_size + idx.shape[1]).unsqueeze(0)
            wb = (pos < counts.unsqueeze(1)).to(dtype)
            if not bool(wb.any()):
                break
            active = wb.sum(dim=1) > 0
            extra: tuple[torch.Tensor, ...] = ()
            if canaries is not None:  # split the minibatch: records, then the canaries' weights
                joined = idx >= n_max
                wc = torch.zeros(k, canaries.present.shape[1], dtype=dtype)
                wc.scatter_add_(1, torch.where(joined, idx - n_max, 0), wb * joined)
                wb, idx, extra = wb * ~joined, torch.where(joined, 0, idx), (wc,)
            grads, total = _active_rows(step, stacked, gather(data.batch, idx), wb, active,
                                        *extra)
            with torch.no_grad():
                opt.step(stacked, grads, active=active)
            loss_sum += total.detach()
            seen += wb.sum(dim=1)
    updates = {name: stacked[name] - start[name] for name in stacked}
    return updates, loss_sum / seen.clamp(min=1.0)


def _active_rows(step, params: Params, batch: Batch, wb: torch.Tensor, active: torch.Tensor,
                 *per_row: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """`step` on the rows that have examples in this minibatch only (a client past its last
    example takes no step, so its zero-weight gradient is wasted work); the other rows'
    gradients and losses are zero. `per_row` are further (K, ...) step inputs (the canaries'
    weights)."""
    if bool(active.all()):
        return step(params, batch, wb, *per_row)
    rows = torch.nonzero(active).flatten()
    grads, total = step({n: p[rows] for n, p in params.items()},
                        {n: t[rows] for n, t in batch.items()}, wb[rows],
                        *(t[rows] for t in per_row))
    full = {n: torch.zeros_like(p) for n, p in params.items()}
    for n, g in grads.items():
        full[n][rows] = g
    out = torch.zeros(wb.shape[0], dtype=total.dtype)
    out[rows] = total
    return full, out
