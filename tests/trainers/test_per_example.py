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
from privbench.spec.schema import ModelSpec
from privbench.trainers import ghost
from privbench.trainers.aggregation import clip_factor
from privbench.trainers.per_example import (
    EngineError,
    clipped_sum,
    per_example_grads,
    select_engine,
)

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


class Sequence(nn.Module):
    """Token ids (B, T) -> embedding -> a Linear over every position (B, T, d) -> mean -> head:
    the ghost engine's sequence case sum_{t,t'} (a_t.a_t')(g_t.g_t') and its embedding rule."""

    def __init__(self, vocab: int = 11, n_classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 5, padding_idx=0)
        self.mix = nn.Linear(5, 6)
        self.head = nn.Linear(6, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.embed(ids))).mean(dim=1))


class GPT2Style(nn.Module):
    """Token ids -> embedding -> transformers' Conv1D (GPT-2's linear layer, weight (in, out))
    over every position -> mean -> head: the ghost engine's transposed-weight layout."""

    def __init__(self, vocab: int = 11, n_classes: int = 3) -> None:
        super().__init__()
        from transformers.pytorch_utils import Conv1D

        self.embed = nn.Embedding(vocab, 5)
        self.proj = Conv1D(6, 5)  # 5 inputs, 6 outputs
        self.head = nn.Linear(6, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.proj(self.embed(ids))).mean(dim=1))


class TrimsPadding(nn.Module):
    """Token ids whose batch is trimmed to its longest sequence before the first layer:
    data-dependent Python control flow (a shape read from the data), as encoders that trim
    padding have. Each example's output is what it is alone (padding adds nothing to the sum),
    but torch.func cannot trace it; the LayerNorm leaves the ghost engine out, so only the hooks
    engine runs."""

    def __init__(self, vocab: int = 11, n_classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 5, padding_idx=0)
        self.mix = nn.Linear(5, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        used = int((ids != 0).any(dim=0).nonzero().max()) + 1
        ids = ids[:, :used]
        hidden = torch.tanh(self.norm(self.mix(self.embed(ids))))
        return self.head((hidden * (ids != 0).unsqueeze(-1)).sum(dim=1))


class FlatRows(nn.Module):
    """Applies its Linear to rows of three features, (B*2, 3), flattened example by example (as
    OPT's MLP flattens (B, T, d)): the ghost engine reads them as (B, 2, 3), which a probe
    against vmap confirms. `by_position` flattens position by position instead: the rows of one
    example are not adjacent, and the probe must refuse the ghost engine."""

    def __init__(self, by_position: bool = False) -> None:
        super().__init__()
        self.by_position = by_position
        self.rows = nn.Linear(3, 3)
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.by_position:
            rows = self.rows(x.reshape(b, 2, 3).transpose(0, 1).reshape(-1, 3))
            return self.head(rows.reshape(2, b, 3).transpose(0, 1).reshape(b, 6))
        return self.head(self.rows(x.reshape(-1, 3)).reshape(b, 6))


def strided_cnn() -> nn.Module:
    """A CNN whose second convolution (stride 4: 2x2 output positions) is cheaper by the ghost
    norm over unfolded patches, while its first (64 positions) forms per-example gradients: the
    ghost engine takes both ways for convolutions."""
    from privbench.models.zoo import FlatImage

    return nn.Sequential(FlatImage(8), nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 8, 3, stride=4, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32, 5))


def user_model(n_features: int, n_classes: int, width: int = 5) -> nn.Module:
    """A user's model with a layer the ghost engine has no rule for (LayerNorm)."""
    return nn.Sequential(nn.Linear(n_features, width), nn.LayerNorm(width), nn.ReLU(),
                         nn.Linear(width, n_classes))


def classifier_case(model, shape, n_classes):
    def build():
        batch, weights = classifier_batch(3, 5, shape, n_classes, seed=2)
        return ClassifierAdapter(model()), batch, weights
    return build


def token_case(model):
    def build():
        gen = torch.Generator().manual_seed(3)
        ids = torch.randint(1, 11, (3, 5, 6), generator=gen)
        lengths = torch.randint(1, 5, (3, 5), generator=gen)  # right padding (id 0)
        ids = ids.masked_fill(torch.arange(6) >= lengths.unsqueeze(-1), 0)
        y = torch.randint(0, 3, (3, 5), generator=gen)
        torch.manual_seed(0)
        return ClassifierAdapter(model()), {"x": ids, "y": y}, (torch.rand(3, 5) < 0.7).float()
    return build


def _seeded(fn):
    def build():
        torch.manual_seed(0)
        return fn()
    return build


ADAPTERS = {
    "mlp": classifier_case(lambda: build_model(ModelSpec(hidden=[7, 5]), 6, 4, seed=0), (6,), 4),
    "cnn": classifier_case(
        lambda: build_model(ModelSpec(name="cnn", channels=[3, 4]), 64, 5, seed=0), (64,), 5),
    "strided_cnn": classifier_case(_seeded(strided_cnn), (64,), 5),
    "sequence": token_case(Sequence),
    "gpt2_style": token_case(GPT2Style),
    "user": classifier_case(_seeded(lambda: user_model(6, 4)), (6,), 4),
    "trims_padding": token_case(TrimsPadding),
    "flat_rows": classifier_case(_seeded(FlatRows), (6,), 4),
}
# Engines each adapter runs on: ghost needs every trainable layer to have a fast path; vmap needs
# a forward torch.func can trace.
APPLIES = {"mlp": {"vmap", "ghost", "hooks"}, "cnn": {"vmap", "ghost", "hooks"},
           "strided_cnn": {"vmap", "ghost", "hooks"},
           "sequence": {"vmap", "ghost", "hooks"}, "gpt2_style": {"vmap", "ghost", "hooks"},
           "user": {"vmap", "hooks"},
           "trims_padding": {"hooks"}, "flat_rows": {"vmap", "ghost"}}


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
    again, _ = clipped_sum(adapter, params, batch, weights, clip=clip, engine=engine)
    assert all(torch.equal(again[n], sums[n]) for n in sums)  # deterministic, bit for bit
    torch.testing.assert_close(norms, ref_norms, **TOL)
    for n, s in ref_sums.items():
        torch.testing.assert_close(sums[n], s, **TOL, msg=n)
    # Rows and examples differ, so a mix-up of either would not pass unnoticed.
    name = next(iter(reference))
    assert not torch.allclose(reference[name][0, 0], reference[name][0, 1])
    assert not torch.allclose(reference[name][0, 0], reference[name][1, 0])


CASES = [(name, engine) for name in ADAPTERS for engine in sorted(APPLIES[name])]


@pytest.mark.parametrize(("name", "engine"), CASES)
def test_engines_equal_single_example_loop(name, engine):
    adapter, batch, weights = ADAPTERS[name]()
    params = rows_of(adapter, 3, seed=1)
    assert select_engine(adapter, params, batch, engine) == engine
    check_engine(adapter, params, batch, weights, engine)
    if engine == "ghost":  # the rows went through one vectorised call, not a loop
        assert ghost.rows_vectorised(adapter)


@pytest.mark.parametrize(("name", "rows", "engine"), [
    ("mlp", 2, "ghost"), ("cnn", 1, "ghost"), ("cnn", 2, "vmap"), ("sequence", 2, "ghost"),
    ("user", 2, "vmap"), ("trims_padding", 2, "hooks"), ("flat_rows", 2, "ghost")])
def test_auto_picks_the_fastest_engine_that_runs(name, rows, engine):
    """Convolutions over several rows take vmap (faster there, see benchmarks)."""
    adapter, batch, _ = ADAPTERS[name]()
    assert select_engine(adapter, rows_of(adapter, rows, seed=1), batch) == engine


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


class FlipsBatch(nn.Module):
    """Feeds example B-1-i's hidden state to example i's head: alone, each example is fine (vmap
    sees one at a time), but batched the losses mix examples, which per-layer norms would
    silently get wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(6, 5)
        self.head = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.first(x)).flip(0))


@pytest.mark.parametrize(("model", "reason"), [
    (lambda: FlatRows(by_position=True), "its norms disagree with the per-example gradients"),
    (FlipsBatch, "its norms disagree with the per-example gradients"),
])
def test_ghost_probe_refuses_a_model_whose_layers_mix_examples(model, reason):
    adapter, batch, _ = classifier_case(model, (6,), 4)()
    params = rows_of(adapter, 1, seed=0)
    with pytest.raises(EngineError, match=f"^model.engine = 'ghost' cannot run.*{reason}") as err:
        select_engine(adapter, params, batch, "ghost")
    assert "\n" not in str(err.value)
    assert select_engine(adapter, params, batch) == "vmap"


@pytest.mark.parametrize(("name", "engine", "reason"), [
    ("user", "ghost", r"layer '1' \(LayerNorm\) has no ghost-norm fast path"),
    ("trims_padding", "vmap", "cannot run on this model"),
    ("trims_padding", "ghost", r"layer 'norm' \(LayerNorm\)"),
])
def test_an_engine_that_cannot_run_is_a_one_line_error(name, engine, reason):
    adapter, batch, _ = ADAPTERS[name]()
    with pytest.raises(EngineError, match=f"^model.engine = '{engine}'.*{reason}") as err:
        select_engine(adapter, rows_of(adapter, 1, seed=0), batch, engine)
    assert "\n" not in str(err.value) and 'model.engine = "auto"' in str(err.value)


def test_a_model_vmap_cannot_trace_trains_through_the_hooks_engine():
    """Clipped-gradient steps through the engine `auto` picks (hooks) lower the training loss."""
    adapter, batch, weights = ADAPTERS["trims_padding"]()
    params = rows_of(adapter, 3, seed=1)
    engine = select_engine(adapter, params, batch)
    assert engine == "hooks"

    def loss() -> float:
        return float(sum(adapter.per_example_loss({n: p[r] for n, p in params.items()},
                                                  {n: v[r] for n, v in batch.items()}).mean()
                         for r in range(3)))

    before = loss()
    for _ in range(30):
        sums, _ = clipped_sum(adapter, params, batch, weights, clip=1.0, engine=engine)
        params = {n: p - 0.5 * sums[n] / 5 for n, p in params.items()}
    assert loss() < 0.8 * before


def test_unknown_engine_is_a_one_line_error():
    adapter = ClassifierAdapter(nn.Linear(3, 2))
    params = rows_of(adapter, 1, seed=0)
    batch, _ = classifier_batch(1, 2, (3,), 2, seed=0)
    with pytest.raises(Exception, match=r"^model\.engine = 'fast' is not an engine") as err:
        select_engine(adapter, params, batch, "fast")
    assert "\n" not in str(err.value)


