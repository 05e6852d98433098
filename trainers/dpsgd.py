"""Sample-level DP-SGD inside many clients at once: Poisson-sampled records, per-example clipping
and Gaussian noise, vectorised over clients AND examples with torch.func (vmap of vmap of grad).

Centralised DP-SGD is the one-client case. Each step, every record of every client joins the
batch independently with probability q; the per-example gradients of the selected records are
clipped to norm C (`aggregation.clip_updates`, rows = examples), summed, and N(0, (z C)^2) noise is
added by the client before dividing by the public expected batch size. Steps with an empty batch
still add noise, so the Poisson-subsampled Gaussian event is exactly what ran.

An audit may plant gradient canaries (`GradientCanaries`): records whose per-example gradient is a
fixed Dirac vector. They are Poisson-sampled like any record and clipped by the same rule before
the noise, so a bug in sampling, clipping or noise reaches them as it reaches real records.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from privbench.models.adapter import Batch, ClassifierAdapter, ModelAdapter, Params
from privbench.trainers import aggregation
from privbench.trainers.aggregation import gaussian_like
from privbench.trainers.client_data import ClientData, gather
from privbench.trainers.client_update import stack_params
from privbench.trainers.optim import RowOptimizer


@dataclass(frozen=True)
class GradientCanaries:
    """Audit records whose per-example gradient is `norm` times a Dirac vector (Nasr et al. 2023).

    Canary j is a record of client k when `present[k, j]`; its gradient is `norm` at the flat
    coordinate `coords[j]` of the parameters (model order) and zero elsewhere.
    """

    present: torch.Tensor  # (K, m) bool
    coords: torch.Tensor  # (m,) long
    norm: float

    def rows(self, clients: torch.Tensor) -> GradientCanaries:
        """The canaries of a subset of the clients (rows of `present`)."""
        return GradientCanaries(self.present[clients], self.coords, self.norm)

    def blocks(self, params: Params) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(parameter name, coordinates inside it, canary columns) for each parameter holding
        canaries, in model order: the layout every step adds to."""
        out, offset = [], 0
        for name, p in params.items():
            size = p[0].numel()
            cols = torch.nonzero((self.coords >= offset) & (self.coords < offset + size)).flatten()
            if cols.numel():
                out.append((name, self.coords[cols] - offset, cols))
            offset += size
        return out


def add_canary_gradients(sums: Params, canaries: GradientCanaries,
                         blocks: list[tuple[str, torch.Tensor, torch.Tensor]], *,
                         sampling_rate: float, clip: float, generator: torch.Generator) -> None:
    """Poisson-sample each planted canary and add its clipped Dirac gradient to `sums` in place."""
    joined = (torch.rand(canaries.present.shape, generator=generator) < sampling_rate) \
        & canaries.present
    value = canaries.norm * float(aggregation.clip_factor(torch.tensor([canaries.norm]), clip)[0])
    contribution = joined.to(torch.float32) * value  # (K, m)
    for name, coords, cols in blocks:
        s = sums[name]
        s.view(s.shape[0], -1).index_add_(1, coords, contribution[:, cols])


def poisson_batches(valid: torch.Tensor, sampling_rate: float,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one Poisson batch per client: (indices (K, b), weights (K, b)) padded to the largest.

    valid: (K, n_max) mask of real records. Padding rows carry weight 0.
    """
    chosen = (torch.rand(valid.shape, generator=generator) < sampling_rate) & valid
    sizes = chosen.sum(dim=1)
    width = max(1, int(sizes.max()))
    order = torch.argsort((~chosen).to(torch.int8), dim=1, stable=True)[:, :width]
    weights = (torch.arange(width).unsqueeze(0) < sizes.unsqueeze(1)).to(torch.float32)
    return order, weights


def per_example_grad_fn(adapter: ModelAdapter):
    """vmap over clients of vmap over examples of the gradient of one example's loss.

    The returned function maps (params (K, ...), batch (K, b, ...)) to gradients (K, b, ...).
    """

    def example_loss(p: Params, example: Batch) -> torch.Tensor:
        return adapter.per_example_loss(p, {n: t.unsqueeze(0) for n, t in example.items()})[0]

    per_client = vmap(grad(example_loss), in_dims=(None, 0))
    return vmap(per_client, in_dims=(0, 0))


def clipped_sum(grads: Params, weights: torch.Tensor, *,
                clip: float) -> tuple[Params, torch.Tensor]:
    """Clip each example's gradient to `clip` and sum each client's batch.

    grads: name -> (K, b, ...); weights: (K, b). Returns the sums (K, ...) and the per-example
    norms (K, b) before clipping.
    """
    k, b = weights.shape
    flat = {name: g.reshape(k * b, *g.shape[2:]) for name, g in grads.items()}
    clipped, norms = aggregation.clip_updates(flat, clip)
    w = weights.reshape(k * b)
    sums = {name: (c * w.view(-1, *([1] * (c.dim() - 1)))).reshape(k, b, *c.shape[1:]).sum(1)
            for name, c in clipped.items()}
    return sums, norms.reshape(k, b)


# Layers without parameters that act on each example independently.
ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Identity)


def is_linear_stack(model: nn.Module) -> bool:
    """True for an nn.Sequential of Linear layers and parameter-free element-wise activations."""
    return isinstance(model, nn.Sequential) and all(
        isinstance(m, (nn.Linear, *ELEMENTWISE)) for m in model) and all(
        m.bias is not None for m in model if isinstance(m, nn.Linear))


def linear_stack_clipped_sum(model: nn.Sequential, params: Params, x: torch.Tensor,
                             y: torch.Tensor, weights: torch.Tensor,
                             clip: float) -> tuple[Params, torch.Tensor]:
    """The same clipped sum as vmap(grad) + `clip_updates`, without per-example gradients.

    For a linear layer the per-example weight gradient is the outer product g_i a_i^T, so its
    norm is ||g_i|| ||a_i|| and the clipped sum is (c * G)^T A: one batched matmul per layer
    (ghost clipping, Li et al. 2022; book-keeping, Bu et al. 2023). x: (K, b, F); weights (K, b).
    Returns the clipped sums (K, ...) and the per-example norms (K, b).
    """
    inputs, outputs, names = [], [], []
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
    grads = torch.autograd.grad((losses * weights.flatten()).sum(), outputs)
    sq = torch.zeros_like(weights)
    for a, g in zip(inputs, grads, strict=True):
        g_sq = g.pow(2).sum(-1)
        sq = sq + a.pow(2).sum(-1) * g_sq + g_sq
    norms = sq.sqrt()
    factor = aggregation.clip_factor(norms, clip) * weights
    sums: Params = {}
    for name, a, g in zip(names, inputs, grads, strict=True):
        scaled = g * factor.unsqueeze(-1)
        sums[f"{name}.weight"] = torch.bmm(scaled.transpose(1, 2), a)
        sums[f"{name}.bias"] = scaled.sum(1)
    return {n: sums[n] for n in params}, norms


def example_clipped_sum(adapter: ModelAdapter, params: Params, batch: Batch,
                        weights: torch.Tensor, *, clip: float,
                        engine: str = "auto") -> tuple[Params, torch.Tensor]:
    """Each row's weighted sum of per-example gradients clipped to `clip`, and their norms.

    params (K, ...), batch (K, b, ...), weights (K, b). `engine`: "vmap" (any model torch.func
    traces), "linear" (a classifier that is a Linear stack: norms without per-example gradients)
    or "auto" (linear where it applies). Both give the same clipped sums.
    """
    module = getattr(adapter, "module", None)
    linear = engine == "linear" or (engine == "auto" and isinstance(adapter, ClassifierAdapter)
                                    and is_linear_stack(module))
    if linear:
        return linear_stack_clipped_sum(module, params, batch["x"], batch["y"], weights, clip)
    return clipped_sum(per_example_grad_fn(adapter)(params, batch), weights, clip=clip)


def dp_sgd(adapter: ModelAdapter, params: Params, data: ClientData, *, steps: int,
           sampling_rate: float, expected_batch: float, lr: float, clip: float,
           noise_multiplier: float, generator: torch.Generator,
           noise_generator: torch.Generator, engine: str = "auto",
           canaries: GradientCanaries | None = None, batched_params: bool = False,
           optimizer: str = "sgd") -> Params:
    """Run `steps` DP-SGD steps on each of K clients from the same starting `params`.

    Args:
        adapter: the model; data: the K clients' padded records and counts.
        steps, sampling_rate, expected_batch: Poisson batches of rate q, the noisy sum divided
            by the public expected batch size.
        lr, optimizer: the step on the noised mean gradient ("sgd" or "adam", fresh state).
        clip, noise_multiplier: per-example clipping bound C and noise N(0, (z C)^2) per step.
        generator, noise_generator: the sampling and noise streams.
        engine: the per-example engine (see `example_clipped_sum`).
        canaries: the audit's gradient canaries of these K clients.
        batched_params: `params` holds one starting point per row, each (K, ...): independent
            runs side by side.
    Returns:
        The per-client updates (K, ...). No other statistic of the records leaves this function:
        only the noised steps touch them.
    """
    k = data.n_clients
    stacked = ({name: p.detach().clone() for name, p in params.items()} if batched_params
               else stack_params(params, k))
    start = {name: p.clone() for name, p in stacked.items()}
    valid = data.valid()
    blocks = canaries.blocks(stacked) if canaries is not None else []
    opt = RowOptimizer(optimizer, stacked, lr, rows=k)
    for _ in range(steps):
        idx, weights = poisson_batches(valid, sampling_rate, generator)
        sums, _ = example_clipped_sum(adapter, stacked, gather(data.batch, idx), weights,
                                      clip=clip, engine=engine)
        if canaries is not None:
            add_canary_gradients(sums, canaries, blocks, sampling_rate=sampling_rate, clip=clip,
                                 generator=generator)
        noise = gaussian_like(sums, noise_multiplier * clip, noise_generator)
        noised = {name: sums[name] + noise[name] for name in sums}
        with torch.no_grad():
            opt.step(stacked, noised, scale=expected_batch)
    return {name: stacked[name] - start[name] for name in stacked}
