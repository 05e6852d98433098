"""Sample-level DP-SGD inside many clients at once: Poisson-sampled records, per-example clipping
and Gaussian noise, vectorised over clients and examples (the engines of trainers/per_example.py).

Centralised DP-SGD is the one-client case. Each step, every record of every client joins the
batch independently with probability q; the per-example gradients of the selected records are
clipped to norm C (`trainers/per_example.clipped_sum`: the engine chosen before the first round,
the one clipping rule `aggregation.clip_factor`), summed, and N(0, (z C)^2) noise is
added by the client before dividing by the public expected batch size. Steps with an empty batch
still add noise, so the Poisson-subsampled Gaussian event is exactly what ran.

An audit may plant gradient canaries (`GradientCanaries`): records whose per-example gradient is a
fixed Dirac vector. They enter where real records enter: each step they are Poisson-sampled into
the batch like any record (rows after the client's records, drawn from the same stream right
after them), and the engine's per-example step sets a canary row's gradient to norm * e_coord
before clipping (`DiracRows`, the engines' `before_clip` hook), so its norm, clip factor,
weighted sum and noise are the code real rows go through. A bug in sampling, clipping, summation
or noise reaches them as it reaches real records.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from privbench.models.adapter import Batch, ModelAdapter, Params
from privbench.trainers.aggregation import gaussian_like
from privbench.trainers.client_data import ClientData, gather
from privbench.trainers.client_update import row_states
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
    # layouts by the parameters' names and shapes, shared by every subset `rows` gives
    layouts: dict[tuple, CanaryLayout] = field(default_factory=dict, compare=False, repr=False)

    def rows(self, clients: torch.Tensor) -> GradientCanaries:
        """The canaries of a subset of the clients (rows of `present`)."""
        return GradientCanaries(self.present[clients], self.coords, self.norm, self.layouts)

    def layout(self, params: Params) -> CanaryLayout:
        """Where each canary's coordinate lies in `params` (name -> (K, ...)): computed once per
        parameters' shapes (a run's rounds share it), so each step only looks its joined
        canaries up."""
        shapes = tuple((name, tuple(p.shape)) for name, p in params.items())
        if shapes not in self.layouts:
            self.layouts[shapes] = self._layout(params)
        return self.layouts[shapes]

    def _layout(self, params: Params) -> CanaryLayout:
        sizes = [p[0].numel() for p in params.values()]
        rows = next(iter(params.values())).shape[0] if params else 0
        ends = torch.tensor(sizes, dtype=torch.long).cumsum(0)
        which = torch.searchsorted(ends, self.coords, right=True)  # len(sizes): past them all
        held = torch.bincount(which, minlength=len(sizes) + 1)[:len(sizes)] > 0
        names = [name for name, h in zip(params, held.tolist(), strict=True) if h]
        # each canary's parameter, numbered among those holding canaries (-1: past them all)
        block = torch.cat([held.long().cumsum(0) - 1, torch.tensor([-1])])[which]
        starts = torch.cat([torch.zeros(1, dtype=torch.long), ends])
        local = torch.where(block >= 0, self.coords - starts[which], self.coords)
        # the canaries grouped by parameter (stable: canary order within one), and each one's
        # place in that grouping
        order = torch.argsort(block, stable=True)
        position = torch.empty_like(order)
        position[order] = torch.arange(len(order))
        counts = torch.bincount(block + 1, minlength=len(names) + 1).tolist()  # block -1 first
        grouped = local[order].split_with_sizes(counts)[1:]
        size_of = dict(zip(params, sizes, strict=True))
        # each parameter's canary coordinates in its flat (K, ...) tensor, row after row
        flat = [torch.arange(rows).unsqueeze(1) * size_of[name] + g.unsqueeze(0)
                for name, g in zip(names, grouped, strict=True)]
        return CanaryLayout(names, block, local, position, counts, flat)


@dataclass(frozen=True)
class CanaryLayout:
    """The parameters holding canaries, and each canary's parameter (index into `names`) and
    flat coordinate inside it."""

    names: list[str]
    block: torch.Tensor  # (m,) long
    local: torch.Tensor  # (m,) long
    position: torch.Tensor  # (m,) long: canary j's place when grouped by parameter
    counts: list[int]  # the canaries outside every parameter, then those of each of `names`
    flat: list[torch.Tensor]  # per name, (K, its canaries): their flat indices in (K, ...)

    def linear_loss(self, params: Params, weights: torch.Tensor, norm: float) -> torch.Tensor:
        """The summed loss of the canary records a minibatch holds, `norm` * theta[coord_j]
        times each one's weight: a record whose gradient is the Dirac vector `norm` * e_coord,
        for training that takes the gradient of a batch loss (local SGD without DP) rather
        than per-example gradients.

        Args:
            params: one row's parameters (name -> the parameter's shape; vmap adds the rows).
            weights: (m,) each canary's weight in the minibatch (0: not in it).
            norm: the canary gradient's norm.
        Returns:
            The scalar loss.
        """
        total = weights.new_zeros(())
        for b, name in enumerate(self.names):
            sel = self.block == b
            total = total + (params[name].reshape(-1)[self.local[sel]] * weights[sel]).sum()
        return norm * total


class DiracRows:
    """The `before_clip` hook of one batch (trainers/per_example.BeforeClip): rows holding a
    canary get the gradient `norm` * e_coord (its coordinate, `GradientCanaries.coords`) in place
    of the gradient of their placeholder input.

    Args:
        rows: (K, b) True where the batch row is a canary.
        canary: (K, b) the canary j each such row holds (ignored elsewhere).
        norm: the canary gradient's norm (before clipping).
        layout: where each canary's coordinate lies (`GradientCanaries.layout`).
        model_width: the leading batch columns that hold any real record (default: all); the
            columns after it hold canary rows and padding only, whose gradients need no model
            evaluation (engines evaluate the model on the first `model_width` columns).
    """

    def __init__(self, rows: torch.Tensor, canary: torch.Tensor, norm: float,
                 layout: CanaryLayout, model_width: int | None = None) -> None:
        self.rows, self.norm, self.layout, self.canary = rows, float(norm), layout, canary
        # leading batch columns holding a real record: the model is evaluated on those only
        self.model_width = int(rows.shape[1]) if model_width is None else int(model_width)
        # each row's canary's place in the layout's grouping by parameter (0 off the canaries)
        self.place = layout.position[torch.where(rows, canary, 0)]
        self._triples: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    def _blocks(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per parameter holding canaries: the (client, batch column, flat coordinate) of each
        canary row there; found on the first `set_grads` (engines that materialise
        per-example gradients)."""
        if self._triples is None:
            layout = self.layout
            k, i = self.rows.nonzero(as_tuple=True)
            j = self.canary[k, i]
            block, local = layout.block[j], layout.local[j]
            self._triples = {}
            for b, name in enumerate(layout.names):
                sel = block == b
                self._triples[name] = (k[sel], i[sel], local[sel])
        return self._triples

    def set_grads(self, grads: Params, start: int, stop: int) -> Params:
        """Materialised per-example gradients (K, stop - start, ...) of batch rows
        [start, stop), with the canary rows' replaced by their Dirac gradients (in place: the
        engines own the tensors they pass; a full copy a step costs as much as the rows)."""
        # past model_width the engines pass zeros (no model evaluated there): nothing to clear
        rows = self.rows[:, start:max(start, min(stop, self.model_width))]
        clear = bool(rows.any())
        out = {}
        for name, g in grads.items():
            flat = g.reshape(*g.shape[:2], -1)
            if clear:
                flat[:, :rows.shape[1]].masked_fill_(rows.unsqueeze(-1), 0.0)
            if name in self._blocks():
                k, i, c = self._blocks()[name]
                inside = (i >= start) & (i < stop)
                flat[k[inside], i[inside] - start, c[inside]] = self.norm
            out[name] = flat.view_as(g)
        return out

    def norms(self, norms: torch.Tensor) -> torch.Tensor:
        """Per-example norms (K, b) with the canary rows' set to their gradients' norm (engines
        that never materialise the gradients: the Dirac vector's norm is `norm`)."""
        return norms.masked_fill(self.rows, self.norm)

    def add_clipped(self, sums: Params, factor: torch.Tensor) -> None:
        """Add each canary row's gradient times its clip factor (K, b) to `sums` in place.

        Each canary's term factor * norm is scattered to its place in the layout's grouping
        by parameter (zero for canaries the batch does not hold), then added at its
        coordinates one parameter at a time: one addition per canary coordinate, as adding
        each row's term at its coordinate would make (a canary the batch lacks adds 0)."""
        terms = torch.where(self.rows, factor * self.norm, 0.0)
        grouped = terms.new_zeros((terms.shape[0], len(self.layout.position)))
        grouped.scatter_add_(1, self.place, terms)
        parts = grouped.split_with_sizes(self.layout.counts, 1)[1:]
        for name, index, part in zip(self.layout.names, self.layout.flat, parts, strict=True):
            sums[name].put_(index, part, accumulate=True)


# Draws (every row's records and canaries) of one block of steps, drawn in one call: about
# 20 bytes a draw while it is packed (uniform, masks, sort keys, the sort's int64 order).
POISSON_BLOCK = 1 << 20


def poisson_steps(valid: torch.Tensor, sampling_rate: float, generator: torch.Generator,
                  steps: int, canaries: torch.Tensor | None = None
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Each step's Poisson batch of every client: (indices (K, b), weights (K, b), the record
    columns w) for `steps` steps, padded to the step's largest.

    valid: (K, n_max) mask of real records; padding rows carry weight 0. canaries: (K, m) mask
    of each client's planted canary records, drawn right after the records at the same rate;
    index n_max + j is canary j. Every client's canary rows come after the first w columns (the
    largest batch of real records, at least 1), so the model is evaluated on those columns only:
    a canary row's gradient is set by the hook, never computed.

    The uniforms of a block of steps are drawn in one call and packed in one sort: the same
    numbers, in the same order (each step the records, then the canaries, row by row), as a
    draw a step, so the batches and the generator's state after them are the same.
    """
    k, n = valid.shape
    m = 0 if canaries is None else int(canaries.shape[1])
    members = valid if canaries is None else torch.cat([valid, canaries], dim=1)
    # sort keys: chosen records, other records, chosen canaries, other canaries (stable)
    column_key = (torch.arange(n + m) >= n).to(torch.int8) * 2
    per_step = k * (n + m)
    block = max(1, POISSON_BLOCK // max(1, per_step))
    for first in range(0, steps, block):
        count = min(block, steps - first)
        uniform = torch.rand(count * per_step, generator=generator).view(count, per_step)
        draws = uniform[:, :k * n].reshape(count, k, n)
        if m:
            draws = torch.cat([draws, uniform[:, k * n:].reshape(count, k, m)], dim=2)
        chosen = (draws < sampling_rate) & members
        order = torch.argsort((~chosen).to(torch.int8) + column_key, dim=2, stable=True)
        record_width = chosen[..., :n].sum(dim=2).amax(dim=1).clamp(min=1).tolist()
        canary_width = chosen[..., n:].sum(dim=2).amax(dim=1).tolist() if m else [0] * count
        for t in range(count):
            w, c = record_width[t], canary_width[t]
            idx = order[t, :, :w] if not c else torch.cat([order[t, :, :w],
                                                             order[t, :, n:n + c]], dim=1)
            yield idx, chosen[t].gather(1, idx).to(torch.float32), w


def poisson_batches(valid: torch.Tensor, sampling_rate: float, generator: torch.Generator,
                    canaries: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's Poisson batch of every client: (indices (K, b), weights (K, b)); see
    `poisson_steps`."""
    idx, weights, _ = next(poisson_steps(valid, sampling_rate, generator, 1, canaries))
    return idx, weights


def canary_batch(data: ClientData, idx: torch.Tensor, canaries: GradientCanaries,
                 layout: CanaryLayout, record_width: int) -> tuple[Batch, DiracRows]:
    """The batch of indices `idx` into the records then the canaries (`poisson_steps`), and
    its `before_clip` hook. A canary row's input is a placeholder (the client's first record):
    its gradient is replaced before clipping. The canary rows follow the first `record_width`
    columns, those of real records, so past them the batch is canaries and padding: the hook's
    `model_width` stops the model's evaluation there."""
    n_max = data.n_max
    rows = idx >= n_max
    batch = gather(data.batch, torch.where(rows, 0, idx))
    return batch, DiracRows(rows, idx - n_max, canaries.norm, layout, record_width)


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
    stacked, start, opt = row_states(params, k, batched_params, optimizer, lr)
    valid = data.valid()
    engine = resolve_engine(adapter, stacked, data.batch, engine)
    layout = canaries.layout(stacked) if canaries is not None else None
    for idx, weights, record_width in poisson_steps(
            valid, sampling_rate, generator, steps,
            None if canaries is None else canaries.present):
        hook: dict[str, DiracRows] = {}
        if canaries is None:
            batch = gather(data.batch, idx)
        else:  # canary rows of the batch: their gradients are set before clipping
            batch, hook["before_clip"] = canary_batch(data, idx, canaries, layout,
                                                      record_width)
        if engine == ADAPTER_FAST_PATH:
            sums, _ = adapter.clipped_sum(stacked, batch, weights, clip,  # type: ignore[attr-defined]
                                          **hook)
        else:
            sums, _ = clipped_sum(adapter, stacked, batch, weights, clip=clip, engine=engine,
                                  microbatch=microbatch, **hook)
        noise = gaussian_like(sums, noise_multiplier * clip, noise_generator)
        noised = {name: sums[name] + noise[name] for name in sums}
        with torch.no_grad():
            opt.step(stacked, noised, scale=expected_batch)
    return {name: stacked[name] - start[name] for name in stacked}
