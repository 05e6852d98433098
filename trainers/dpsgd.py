"""Sample-level DP-SGD inside many clients at once: Poisson-sampled records, per-example clipping
and Gaussian noise, vectorised over clients and examples (the engines of trainers/per_example.py).

Centralised DP-SGD is the one-client case. Each step, every record of every client joins the
batch independently with probability q; the per-example gradients of the selected records are
clipped to norm C (`trainers/per_example.clipped_sum`: the engine chosen before the first round,
the one clipping rule `aggregation.clip_factor`), summed, and N(0, (z C)^2) noise is
added by the client before dividing by the public expected batch size. Steps with an empty batch
still add noise, so the Poisson-subsampled Gaussian event is exactly what ran.

An audit may plant gradient canaries (`GradientCanaries`): records whose per-example gradient is a
fixed Dirac vector. They are Poisson-sampled like any record and clipped by the same rule before
the noise, so a bug in sampling, clipping or noise reaches them as it reaches real records.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from privbench.models.adapter import Batch, ModelAdapter, Params
from privbench.trainers import aggregation
from privbench.trainers.aggregation import gaussian_like
from privbench.trainers.client_data import ClientData, gather
from privbench.trainers.client_update import stack_params
from privbench.trainers.optim import RowOptimizer
from privbench.trainers.per_example import clipped_sum, select_engine


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


# The engine name of an adapter's own `clipped_sum` (privbench/models/adapter.py's optional fast
# path), which "auto" prefers.
ADAPTER_FAST_PATH = "adapter"


def resolve_engine(adapter: ModelAdapter, params: Params, sample_batch: Batch,
                   requested: str = "auto") -> str:
    """The per-example engine DP-SGD runs, chosen once before the first step.

    "auto" takes the adapter's own fast path where it has one, else what
    `per_example.select_engine` picks on `sample_batch`; a named engine that cannot run is a
    one-line error naming model.engine.
    """
    if requested in ("auto", ADAPTER_FAST_PATH) and hasattr(adapter, "clipped_sum"):
        return ADAPTER_FAST_PATH
    return select_engine(adapter, params, sample_batch, requested)


def dp_sgd(adapter: ModelAdapter, params: Params, data: ClientData, *, steps: int,
           sampling_rate: float, expected_batch: float, lr: float, clip: float,
           noise_multiplier: float, generator: torch.Generator,
           noise_generator: torch.Generator, engine: str = "auto",
           canaries: GradientCanaries | None = None, batched_params: bool = False,
           optimizer: str = "sgd", microbatch: int | None = None) -> Params:
    """Run `steps` DP-SGD steps on each of K clients from the same starting `params`.

    Args:
        adapter: the model; data: the K clients' padded records and counts.
        steps, sampling_rate, expected_batch: Poisson batches of rate q, the noisy sum divided
            by the public expected batch size.
        lr, optimizer: the step on the noised mean gradient ("sgd" or "adam", fresh state).
        clip, noise_multiplier: per-example clipping bound C and noise N(0, (z C)^2) per step.
        generator, noise_generator: the sampling and noise streams.
        engine: the per-example engine (trainers/per_example.py); "auto" is resolved once, on
            the first clients' records, before the first step.
        canaries: the audit's gradient canaries of these K clients.
        batched_params: `params` holds one starting point per row, each (K, ...): independent
            runs side by side.
        microbatch: examples per row in one vmap call of the vmap engine (None: what fits).
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
    engine = resolve_engine(adapter, stacked, data.batch, engine)
    for _ in range(steps):
        idx, weights = poisson_batches(valid, sampling_rate, generator)
        batch = gather(data.batch, idx)
        if engine == ADAPTER_FAST_PATH:
            sums, _ = adapter.clipped_sum(stacked, batch, weights, clip)  # type: ignore[attr-defined]
        else:
            sums, _ = clipped_sum(adapter, stacked, batch, weights, clip=clip, engine=engine,
                                  microbatch=microbatch)
        if canaries is not None:
            add_canary_gradients(sums, canaries, blocks, sampling_rate=sampling_rate, clip=clip,
                                 generator=generator)
        noise = gaussian_like(sums, noise_multiplier * clip, noise_generator)
        noised = {name: sums[name] + noise[name] for name in sums}
        with torch.no_grad():
            opt.step(stacked, noised, scale=expected_batch)
    return {name: stacked[name] - start[name] for name in stacked}
