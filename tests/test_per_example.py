"""Per-example gradient engines equal a Python loop over single examples, on every adapter.

The loop runs each example alone through `torch.autograd.grad` of the adapter's loss with one
row's parameters: nothing vectorised, nothing fused. Every engine that applies must give the same
per-example gradients, norms and clipped sums (float32: rtol 1e-4, atol 1e-6).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from privbench.models import build_model
from privbench.models.adapter import ClassifierAdapter
from privbench.spec import ModelSpec
from privbench.trainers.aggregation import clip_factor
from privbench.trainers.per_example import clipped_sum, per_example_grads, select_engine

TOL = {"rtol": 1e-4, "atol": 1e-6}


def loop_grads(adapter, params, batch):
    """name -> (K, b, ...): autograd of each example alone, one row's parameters at a time."""
    k, b = next(iter(batch.values())).shape[:2]
    rows = []
    for r in range(k):
        row = []
        for i in range(b):
            p = {n: v[r].detach().clone().requires_grad_(True) for n, v in params.items()}
            example = {n: v[r, i:i + 1] for n, v in batch.items()}
            loss = adapter.per_example_loss(p, example)[0]
            grads = torch.autograd.grad(loss, list(p.values()), allow_unused=True)
            row.append({n: torch.zeros_like(p[n]) if g is None else g
                        for n, g in zip(p, grads, strict=True)})
        rows.append({n: torch.stack([g[n] for g in row]) for n in params})
    return {n: torch.stack([row[n] for row in rows]) for n in params}


def loop_clipped_sum(grads, weights, clip):
    flat = torch.cat([g.flatten(start_dim=2) for g in grads.values()], dim=2)
    norms = flat.norm(dim=2)
    factor = clip_factor(norms, clip) * weights
    return {n: (g * factor.view(*factor.shape, *([1] * (g.dim() - 2)))).sum(1)
            for n, g in grads.items()}, norms


def rows_of(adapter, k, seed):
    """K different parameter sets (rows), as K clients or independent runs hold."""
    gen = torch.Generator().manual_seed(seed)
    base = adapter.init_params()
    return {n: p.unsqueeze(0) + 0.1 * torch.randn((k, *p.shape), generator=gen)
            for n, p in base.items()}


def classifier_batch(k, b, shape, n_classes, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((k, b, *shape), generator=gen)
    y = torch.randint(n_classes, (k, b), generator=gen)
    weights = (torch.rand((k, b), generator=gen) < 0.7).float()
    return {"x": x, "y": y}, weights


def check_engine(adapter, params, batch, weights, engine):
    reference = loop_grads(adapter, params, batch)
    got = per_example_grads(adapter, params, batch, engine=engine)
    assert set(got) == set(reference)
    for n, g in reference.items():
        torch.testing.assert_close(got[n], g, **TOL, msg=n)
    clip = float(loop_clipped_sum(reference, weights, 1.0)[1].median())  # some clip, some not
    ref_sums, ref_norms = loop_clipped_sum(reference, weights, clip)
    assert bool((ref_norms > clip).any()) and bool((ref_norms < clip).any())
    sums, norms = clipped_sum(adapter, params, batch, weights, clip=clip, engine=engine)
    torch.testing.assert_close(norms, ref_norms, **TOL)
    for n, s in ref_sums.items():
        torch.testing.assert_close(sums[n], s, **TOL, msg=n)
    # Rows and examples differ, so a mix-up of either would not pass unnoticed.
    name = next(iter(reference))
    assert not torch.allclose(reference[name][0, 0], reference[name][0, 1])
    assert not torch.allclose(reference[name][0, 0], reference[name][1, 0])


def test_vmap_engine_equals_loop_on_mlp():
    adapter = ClassifierAdapter(build_model(ModelSpec(hidden=[7, 5]), 6, 4, seed=0))
    params = rows_of(adapter, 3, seed=1)
    batch, weights = classifier_batch(3, 5, (6,), 4, seed=2)
    assert select_engine(adapter, params, batch, "vmap") == "vmap"
    check_engine(adapter, params, batch, weights, "vmap")


def test_vmap_microbatches_give_the_same_sum():
    adapter = ClassifierAdapter(build_model(ModelSpec(hidden=[5]), 6, 3, seed=0))
    params = rows_of(adapter, 2, seed=1)
    batch, weights = classifier_batch(2, 7, (6,), 3, seed=2)
    whole, n_whole = clipped_sum(adapter, params, batch, weights, clip=0.5, engine="vmap")
    parts, n_parts = clipped_sum(adapter, params, batch, weights, clip=0.5, engine="vmap",
                                 microbatch=3)
    torch.testing.assert_close(n_parts, n_whole, **TOL)
    for n in whole:
        torch.testing.assert_close(parts[n], whole[n], **TOL)


def test_unknown_engine_is_a_one_line_error():
    adapter = ClassifierAdapter(nn.Linear(3, 2))
    params = rows_of(adapter, 1, seed=0)
    batch, _ = classifier_batch(1, 2, (3,), 2, seed=0)
    with pytest.raises(Exception, match=r"^model\.engine = 'fast' is not an engine") as err:
        select_engine(adapter, params, batch, "fast")
    assert "\n" not in str(err.value)
