"""Per-example gradients and their clipped sum, for any model behind a `ModelAdapter`.

DP-SGD needs, for each row k (a client, or one of K independent runs) and each example i of its
batch, the gradient g_ki of the example's loss, clipped to norm C by the one clipping rule
(`aggregation.clip_factor`) and summed with the batch's 0/1 weights. Engines compute that sum:

- "vmap": `vmap` over rows of `vmap` over examples of `grad` of one example's loss
  (`torch.func`), in microbatches that bound the memory of the materialised gradients. Works on
  any model whose forward torch.func can trace.
- "ghost": per-layer norms without per-example gradients (ghost clipping, Li et al. 2022;
  book-keeping, Bu et al. 2023), for models whose every trainable layer is a Linear, Conv2d,
  Embedding, transformers Conv1D or a LoRA layer (peft's lora_A/lora_B are Linear): one ordinary
  forward and backward per row records each layer's inputs a and output gradients g, a linear
  layer's per-example gradient norm squared is sum_{t,t'} (a_t.a_t')(g_t.g_t') over the sequence
  positions (or ||g^T a||^2 where that is cheaper), and the clipped sum is one matmul per layer.
  See `trainers/ghost.py`.
- "hooks": Opacus's `GradSampleModule` per-sample gradients from module hooks, for models that
  torch.func cannot trace (data-dependent Python control flow); see `trainers/hooks_engine.py`.

The engine interface (one signature for every engine):
    clipped_sum(adapter, params, batch, weights, *, clip, engine, before_clip) -> (sums, norms)
with params name -> (K, ...), batch name -> (K, b, ...), weights (K, b) (padding is 0); sums
name -> (K, ...) = sum_i weights[k, i] * clip_factor(norm_ki) * g_ki, norms (K, b) the per-example
gradient norms before clipping. `before_clip` (a `BeforeClip`, such as the audit's Dirac canary
rows, trainers/dpsgd.DiracRows) sets chosen rows' gradients before clipping: engines that
materialise per-example gradients (vmap, hooks) replace those rows' gradients, then norm, clip
and sum them as any row; engines that do not (ghost, an adapter's fast path) take those rows'
norms from the hook into the same norms, the same clip-factor line, and add their gradients
times that factor to the sum.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch.func import grad, vmap

from privbench.errors import PrivbenchError
from privbench.models.adapter import Batch, ModelAdapter, Params
from privbench.trainers import ghost, hooks_engine
from privbench.trainers.aggregation import clip_factor, update_norms

ENGINES = ("auto", "ghost", "vmap", "hooks")
# Relative agreement the probe asks of the ghost engine against a reference engine.
PROBE_RTOL = 1e-3
# Floats of per-example gradients one vmap call may hold (about 256 MiB in float32).
GRADIENT_BUDGET = 1 << 26


class BeforeClip(Protocol):
    """A hook inside the per-example step: sets chosen rows' gradients before clipping."""

    rows: torch.Tensor  # (K, b) True where the hook sets the row's gradient
    model_width: int  # leading columns holding a real record; past them, hook rows and padding

    def set_grads(self, grads: Params, start: int, stop: int) -> Params:
        """Per-example gradients (K, stop - start, ...) of batch rows [start, stop), with the
        hook's rows replaced (in place: the engines pass gradients they own, zero in the
        columns past `model_width`, where they evaluate no model)."""

    def norms(self, norms: torch.Tensor) -> torch.Tensor:
        """Per-example norms (K, b) with the hook's rows set to their gradients' norms."""

    def add_clipped(self, sums: Params, factor: torch.Tensor) -> None:
        """Add the hook's rows' gradients times their clip factors (K, b) to `sums`."""


class EngineError(PrivbenchError):
    """A per-example gradient engine was asked for that cannot run on this model."""


def _example_grad_fn(adapter: ModelAdapter):
    """vmap over rows of vmap over examples of the gradient of one example's loss."""

    def one_loss(p: Params, example: Batch) -> torch.Tensor:
        return adapter.per_example_loss(p, {k: v.unsqueeze(0) for k, v in example.items()})[0]

    return vmap(vmap(grad(one_loss), in_dims=(None, 0)), in_dims=(0, 0))


def _chunk(params: Params, k: int, b: int, microbatch: int | None) -> int:
    """Examples per row in one vmap call: `microbatch` if given, else what fits the budget."""
    if microbatch is not None:
        return max(1, min(b, microbatch))
    per_example = sum(p[0].numel() for p in params.values())
    return max(1, min(b, GRADIENT_BUDGET // max(1, k * per_example)))


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    return {name: v[:, start:stop] for name, v in batch.items()}


def example_norms(grads: Params) -> torch.Tensor:
    """L2 norm of each example's whole gradient: grads name -> (K, b, ...) gives (K, b)
    (`aggregation.update_norms` with rows = examples)."""
    k, b = next(iter(grads.values())).shape[:2]
    return update_norms({n: g.flatten(0, 1) for n, g in grads.items()}).reshape(k, b)


def vmap_grads(adapter: ModelAdapter, params: Params, batch: Batch, *,
               microbatch: int | None = None) -> Params:
    """Every example's gradient, (K, b, ...), by vmap of grad in microbatches of examples."""
    k, b = _rows_and_width(batch)
    fn = _example_grad_fn(adapter)
    step = _chunk(params, k, b, microbatch)
    parts = [fn(params, _slice(batch, s, s + step)) for s in range(0, b, step)]
    return {name: torch.cat([p[name] for p in parts], dim=1) for name in params}


def vmap_clipped_sum(adapter: ModelAdapter, params: Params, batch: Batch, weights: torch.Tensor,
                     *, clip: float, microbatch: int | None = None,
                     before_clip: BeforeClip | None = None) -> tuple[Params, torch.Tensor]:
    """The clipped sum by vmap(grad), one microbatch of per-example gradients at a time."""
    k, b = weights.shape
    fn = _example_grad_fn(adapter)
    step = _chunk(params, k, b, microbatch)
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    norms = []
    width = b if before_clip is None else min(b, before_clip.model_width)
    # chunks of the model's columns, then of the hook's columns past them (never straddling)
    spans = [(s, min(s + step, width)) for s in range(0, width, step)]
    spans += [(s, min(s + step, b)) for s in range(width, b, step)]
    for start, stop in spans:
        g = _model_grads(fn, params, batch, start, stop, width)
        if before_clip is not None:
            g = before_clip.set_grads(g, start, stop)
        n = example_norms(g)
        factor = clip_factor(n, clip) * weights[:, start:stop]
        for name, gi in g.items():
            sums[name] += torch.einsum("kb,kb...->k...", factor, gi)
        norms.append(n)
    return sums, torch.cat(norms, dim=1)


def _model_grads(fn, params: Params, batch: Batch, start: int, stop: int, width: int) -> Params:
    """Per-example gradients of columns [start, stop), all before `width` (the model's) or all
    after it (hook rows and padding: zero here, the hook sets its rows)."""
    if stop <= width:
        return fn(params, _slice(batch, start, stop))
    return {name: torch.zeros(_rows(params), stop - start, *p.shape[1:], dtype=p.dtype)
            for name, p in params.items()}


def _rows(params: Params) -> int:
    return int(next(iter(params.values())).shape[0])


def _rows_and_width(batch: Batch) -> tuple[int, int]:
    first = next(iter(batch.values()))
    return int(first.shape[0]), int(first.shape[1])


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise EngineError(f"model.engine = {engine!r} is not an engine; use one of "
                          f"{', '.join(ENGINES)}")


def _reason(err: Exception) -> str:
    """The first line of an exception's message, for a one-line error."""
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _agree(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=PROBE_RTOL, atol=1e-6 * float(b.abs().max()) + 1e-12))


def select_engine(adapter: ModelAdapter, params: Params, sample_batch: Batch,
                  requested: str = "auto") -> str:
    """The engine to train this model with, probed on a few examples before the first round.

    "auto" takes "ghost" where every trainable layer has a fast path and its norms agree with
    a reference engine on the probe, else "vmap" where torch.func traces the model, else "hooks":
    never a crash while one engine runs. One exception, from benchmarks/test_bench_engine_rows.py:
    a model with convolutions trained over several rows (clients) takes vmap, which is faster
    there than ghost norms (unfolding every patch); over one row ghost is faster. A requested
    engine that cannot run is a one-line `EngineError` naming `model.engine`.

    Args:
        adapter: the model.
        params: name -> (K, ...) parameters (the first row is probed).
        sample_batch: name -> (K, b, ...) real examples; the first two of the first row are used.
        requested: "auto" or an engine's name.

    Returns:
        The engine's name.
    """
    _check_engine(requested)
    probe_params = {name: p[:1] for name, p in params.items()}
    probe = {name: v[:1, :2] for name, v in sample_batch.items()}
    failures: dict[str, str] = {}
    norms: dict[str, torch.Tensor] = {}
    for name in ("vmap", "hooks"):
        if requested in ("auto", "ghost", name):
            try:
                norms[name] = example_norms(_GRADS[name](adapter, probe_params, probe))
            except Exception as err:  # any failure means "not this engine", never a crash
                failures[name] = _reason(err)
            if name in norms and requested != "hooks":
                break  # one reference is enough
    if requested in ("auto", "ghost"):
        missing = ghost.unsupported(adapter, params)
        if missing is None:
            try:
                flattened: set[str] = set()
                got = example_norms(ghost.ghost_grads(adapter, probe_params, probe, flattened))
                reference = next(iter(norms.values()), None)
                if reference is None and flattened:
                    failures["ghost"] = (f"layer {sorted(flattened)[0]!r} flattens its input "
                                         "and no other engine runs to confirm its layout")
                elif reference is None or _agree(got, reference):
                    if requested == "auto" and "vmap" in norms and _rows(params) > 1 and any(
                            layer.kind == "conv2d" for layer in ghost.layers(adapter, params)):
                        return "vmap"  # convolutions over many rows: vmap measured faster
                    return "ghost"
                else:
                    failures["ghost"] = ("its norms disagree with the per-example gradients "
                                         "(a layer's input mixes examples)")
            except Exception as err:
                failures["ghost"] = _reason(err)
        else:
            failures["ghost"] = missing
        if requested == "ghost":
            raise EngineError(f"model.engine = 'ghost' cannot run on this model: "
                              f"{failures['ghost']}; use model.engine = \"auto\"")
    for name in ("vmap", "hooks"):
        if name in norms and requested in ("auto", name):
            return name
    if requested != "auto":
        raise EngineError(f"model.engine = {requested!r} cannot run on this model: "
                          f"{failures[requested]}; use model.engine = \"auto\"")
    detail = "; ".join(f"{k}: {v}" for k, v in failures.items())
    raise EngineError(f"model: no per-example gradient engine runs on this model ({detail})")


def clipped_sum(adapter: ModelAdapter, params: Params, batch: Batch, weights: torch.Tensor, *,
                clip: float, engine: str = "auto", microbatch: int | None = None,
                before_clip: BeforeClip | None = None) -> tuple[Params, torch.Tensor]:
    """Sum of each row's per-example gradients, each clipped to `clip`, weighted by `weights`.

    Args:
        adapter: the model.
        params: name -> (K, ...), one parameter set per row.
        batch: name -> (K, b, ...), each row's examples.
        weights: (K, b) 0/1 weights (padding is 0).
        clip: the clipping norm C.
        engine: an engine's name, or "auto" (probes with `select_engine` on this batch; pick
            once before training and pass the name, so every step uses the same engine).
        microbatch: examples per row per vmap call (default: what fits `GRADIENT_BUDGET`).
        before_clip: sets chosen rows' gradients before clipping (the audit's canary rows).

    Returns:
        (sums name -> (K, ...), norms (K, b) per-example gradient norms before clipping).
    """
    _check_engine(engine)
    if engine == "auto":
        engine = select_engine(adapter, params, batch)
    if engine == "ghost":
        return ghost.ghost_clipped_sum(adapter, params, batch, weights, clip=clip,
                                       before_clip=before_clip)
    if engine == "hooks":
        cols = weights.shape[1]
        width = cols if before_clip is None else min(cols, before_clip.model_width)
        grads = hooks_engine.hooks_grads(adapter, params, _slice(batch, 0, width))
        if width < cols:  # hook rows and padding only past it: zeros, set by the hook
            grads = {n: torch.nn.functional.pad(g, (0, 0) * (g.dim() - 2) + (0, cols - width))
                     for n, g in grads.items()}
        if before_clip is not None:
            grads = before_clip.set_grads(grads, 0, cols)
        return _from_grads(grads, weights, clip)
    return vmap_clipped_sum(adapter, params, batch, weights, clip=clip, microbatch=microbatch,
                            before_clip=before_clip)


def _from_grads(grads: Params, weights: torch.Tensor, clip: float) -> tuple[Params, torch.Tensor]:
    """The clipped sum of materialised per-example gradients (K, b, ...)."""
    norms = example_norms(grads)
    factor = clip_factor(norms, clip) * weights
    return {name: torch.einsum("kb,kb...->k...", factor, g) for name, g in grads.items()}, norms


def per_example_grads(adapter: ModelAdapter, params: Params, batch: Batch, *,
                      engine: str = "auto") -> Params:
    """Every example's gradient, name -> (K, b, ...), by `engine` (for tests and attacks).

    Args:
        adapter: the model.
        params: name -> (K, ...), one parameter set per row.
        batch: name -> (K, b, ...), each row's examples.
        engine: an engine's name or "auto". The ghost engine materialises the gradients from the
            layer inputs and output gradients it records (what its norms and sums are made of).

    Returns:
        name -> (K, b, ...) per-example gradients.
    """
    _check_engine(engine)
    if engine == "auto":
        engine = select_engine(adapter, params, batch)
    return _GRADS[engine](adapter, params, batch)


_GRADS = {"vmap": vmap_grads, "hooks": lambda a, p, b: hooks_engine.hooks_grads(a, p, b),
          "ghost": lambda a, p, b: ghost.ghost_grads(a, p, b)}
