"""Dirac gradient canaries travel the trainer's real path: they are rows of the Poisson batch, and
each engine's per-example step sets a canary row's gradient (before clipping) to norm * e_coord,
then computes its norm, clip factor and clipped contribution with the code real rows go through.

So a trainer that computes or clips REAL examples' gradients wrongly leaks through the canaries
too: the mutants below (each a bug in real-example clipping, with noise, sampling and accounting
correct) get FAIL from the default white-box design of the mutation suite (192 Dirac canaries of
norm 10 x clip on blank-pixel coordinates, full-batch DP-SGD, iterates). When the canaries were
added to the clipped sum by a separate function they PASSED: that function clipped them itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_audit_mutation_suite import EXAMPLE, audit_verdict

from privbench.models import build_model
from privbench.spec.schema import ModelSpec
from privbench.trainers import aggregation, per_example
from privbench.trainers.dpsgd import DiracRows, GradientCanaries
from privbench.trainers.linear_stack import classifier_adapter

REAL_EXAMPLE_NORMS = per_example.example_norms
REAL_CLIP_FACTOR = aggregation.clip_factor


def norm_of_last_tensor(grads):
    """Mutant (vmap engine): each example's norm is taken over the last parameter tensor only,
    so the clip factor is computed with the wrong norm."""
    last = list(grads)[-1]
    return REAL_EXAMPLE_NORMS({last: grads[last]})


def batch_mean_norm_factor(norms: torch.Tensor, clip: float) -> torch.Tensor:
    """Mutant (the one clipping rule): one factor per batch from its examples' mean norm,
    clipping at the wrong granularity."""
    return REAL_CLIP_FACTOR(norms.mean(dim=-1, keepdim=True), clip).expand_as(norms)


VMAP = {**EXAMPLE, "model": {**EXAMPLE["model"], "engine": "vmap"}}
MUTANTS = {
    "vmap engine: clip factor from the last tensor's norm": (
        VMAP, per_example, "example_norms", norm_of_last_tensor),
    "default engine: clip factor from the batch's mean norm": (
        EXAMPLE, aggregation, "clip_factor", batch_mean_norm_factor),
}


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_real_example_clipping_bug_leaks_through_the_canaries(mutant, monkeypatch,
                                                              tmp_path: Path):
    spec, owner, name, replacement = MUTANTS[mutant]
    monkeypatch.setattr(owner, name, replacement)
    verdict, failed = audit_verdict(spec, tmp_path)
    print(f"\n{mutant}: {verdict} by {', '.join(failed) or 'nothing'}")
    assert verdict == "FAIL"


def test_correct_trainer_passes_on_the_vmap_engine(tmp_path: Path):
    verdict, failed = audit_verdict(VMAP, tmp_path)
    assert verdict == "PASS", failed


@pytest.mark.parametrize("engine", ["vmap", "ghost", "hooks", "adapter"])
def test_every_engine_clips_a_canary_row_like_a_real_row(engine):
    """Every engine gives the same clipped sum for a batch holding canary rows: the real rows'
    clipped gradients plus, per joined canary row, its clip factor (from the same clip-factor
    line as the real rows) times norm at its coordinate; its norm is reported like a real
    row's."""
    model = build_model(ModelSpec(hidden=[4]), 3, 2, seed=0)
    adapter = classifier_adapter(model)
    params = {n: p.detach().unsqueeze(0).repeat(2, *[1] * p.dim()) for n, p in
              model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(2, 5, 3, generator=gen), "y": torch.randint(0, 2, (2, 5),
                                                                            generator=gen)}
    weights = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=torch.float32)
    rows = torch.tensor([[False, False, True, True, False], [False, False, True, False, False]])
    canaries = GradientCanaries(torch.ones(2, 3, dtype=torch.bool), torch.tensor([2, 17, 5]),
                                4.0)  # 17: the second layer's weight
    canary = torch.tensor([[0, 0, 0, 1, 0], [0, 0, 2, 0, 0]])
    coords = canaries.coords[canary]
    hook = DiracRows(rows, canary, 4.0, canaries.layout(params))
    real = weights * ~rows
    clip = 0.5
    if engine == "adapter":
        got, norms = adapter.clipped_sum(params, batch, weights, clip, before_clip=hook)
        want, want_norms = adapter.clipped_sum(params, batch, real, clip)
    else:
        got, norms = per_example.clipped_sum(adapter, params, batch, weights, clip=clip,
                                             engine=engine, before_clip=hook)
        want, want_norms = per_example.clipped_sum(adapter, params, batch, real, clip=clip,
                                                   engine=engine)
    flat = torch.cat([want[n].reshape(2, -1) for n in params], dim=1)
    for k, i in rows.nonzero().tolist():
        flat[k, coords[k, i]] += weights[k, i] * 4.0 * clip / 4.0
    got_flat = torch.cat([got[n].reshape(2, -1) for n in params], dim=1)
    torch.testing.assert_close(got_flat, flat)
    torch.testing.assert_close(norms[rows], torch.full((3,), 4.0))
    keep = ~rows & (weights > 0)
    torch.testing.assert_close(norms[keep], want_norms[keep])


def test_canaries_are_poisson_rows_of_the_batch():
    """The canaries of a client join its batch as rows at the records' sampling rate, after its
    records, drawn from the same stream right after them."""
    from privbench.trainers.dpsgd import poisson_batches

    valid = torch.ones(1, 400, dtype=torch.bool)
    canaries = GradientCanaries(torch.ones(1, 300, dtype=torch.bool), torch.arange(300), 1.0)
    idx, weights = poisson_batches(valid, 0.25, torch.Generator().manual_seed(3),
                                   canaries=canaries.present)
    rows = idx >= 400
    real, joined = int((weights * ~rows).sum()), int((weights * rows).sum())
    assert 70 < real < 130 and 45 < joined < 105
    first_canary = int(rows[0].nonzero()[0])
    assert first_canary == real and bool(rows[0, real:real + joined].all())
    alone, alone_weights = poisson_batches(valid, 0.25, torch.Generator().manual_seed(3))
    assert torch.equal(idx[:, :real], alone[:, :real]) and int(alone_weights.sum()) == real


def _one_step(valid, present, rate, gen):
    """One step drawn on its own, row by row: the records' uniforms (K, n) then the canaries'
    (K, m); each row's chosen records in order, padded with its other records to the step's
    largest count (at least 1), then its chosen canaries (index n + j), padded likewise."""
    n = valid.shape[1]
    chosen = (torch.rand(valid.shape, generator=gen) < rate) & valid
    parts = [(chosen, 0, max(1, int(chosen.sum(1).max())))]
    if present is not None:
        joined = (torch.rand(present.shape, generator=gen) < rate) & present
        parts.append((joined, n, int(joined.sum(1).max())))
    idx, weights = [], []
    for k in range(valid.shape[0]):
        row_idx, row_weights = [], []
        for mask, offset, width in parts:
            picked = [i for i in range(mask.shape[1]) if mask[k, i]]
            rest = [i for i in range(mask.shape[1]) if not mask[k, i]]
            row_idx += [offset + i for i in (picked + rest)[:width]]
            row_weights += [1.0] * len(picked) + [0.0] * (width - len(picked))
        idx.append(row_idx)
        weights.append(row_weights)
    return torch.tensor(idx), torch.tensor(weights), parts[0][2]


@pytest.mark.parametrize("block", [1, 37, 1 << 20])
def test_steps_drawn_in_blocks_are_the_steps_drawn_one_by_one(block, monkeypatch):
    """`poisson_steps` draws a block of steps' uniforms in one call and packs them in one sort:
    the batches, each step's record columns and the generator's state after them are those of
    drawing one step at a time (each step its records, then its canaries)."""
    from privbench.trainers import dpsgd

    gen = torch.Generator().manual_seed(4)
    valid = torch.rand(3, 40, generator=gen) < 0.8
    valid[:, 0] = True
    present = torch.rand(3, 25, generator=gen) < 0.5
    monkeypatch.setattr(dpsgd, "POISSON_BLOCK", block)  # elements: 1 and 37 give 1 step a block
    for canaries in (None, present):
        one, blocks = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
        drawn = list(dpsgd.poisson_steps(valid, 0.2, blocks, 12, canaries))
        assert len(drawn) == 12
        for idx, weights, record_width in drawn:
            want_idx, want_weights, want_width = _one_step(valid, canaries, 0.2, one)
            assert torch.equal(idx, want_idx) and torch.equal(weights, want_weights)
            assert record_width == want_width
        assert torch.equal(one.get_state(), blocks.get_state())


@pytest.mark.parametrize("engine", ["vmap", "ghost", "hooks", "adapter"])
def test_canary_only_columns_skip_the_model_and_give_the_same_sum(engine):
    """Past the last batch column holding a real record (canary_batch's `model_width`) the batch
    is canary rows and padding: every engine evaluates the model on the columns before it only,
    and the clipped sum and norms are those of evaluating every column."""
    from privbench.trainers.client_data import ClientData
    from privbench.trainers.dpsgd import canary_batch

    model = build_model(ModelSpec(hidden=[4]), 3, 2, seed=0)
    adapter = classifier_adapter(model)
    params = {n: p.detach().unsqueeze(0).repeat(2, *[1] * p.dim()) for n, p in
              model.named_parameters()}
    gen = torch.Generator().manual_seed(1)
    data = ClientData({"x": torch.randn(2, 4, 3, generator=gen),
                       "y": torch.randint(0, 2, (2, 4), generator=gen)}, torch.tensor([4, 3]))
    canaries = GradientCanaries(torch.ones(2, 3, dtype=torch.bool), torch.tensor([2, 17, 5]),
                                4.0)
    # client 0: records 1, 3 then canaries 0, 2; client 1: record 0 then canaries 1, 2, padding
    idx = torch.tensor([[1, 3, 4, 6, 0], [0, 5, 6, 0, 0]])
    weights = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=torch.float32)
    batch, hook = canary_batch(data, idx, canaries, canaries.layout(params), record_width=2)
    every = DiracRows(hook.rows, idx - data.n_max, 4.0, canaries.layout(params))
    assert every.model_width == 5
    out = {}
    for name, h in (("skipped", hook), ("every", every)):
        if engine == "adapter":
            out[name] = adapter.clipped_sum(params, batch, weights, 0.5, before_clip=h)
        else:
            out[name] = per_example.clipped_sum(adapter, params, batch, weights, clip=0.5,
                                                engine=engine, before_clip=h)
    (got, got_norms), (want, want_norms) = out["skipped"], out["every"]
    for n in params:
        torch.testing.assert_close(got[n], want[n])
    keep = weights > 0
    torch.testing.assert_close(got_norms[keep], want_norms[keep])


def test_canary_terms_are_added_at_their_coordinates_to_the_last_bit():
    """`DiracRows.add_clipped` adds each canary row's factor * norm at its coordinate, exactly
    the float32 sum of adding them row by row, for canaries in several parameters, several
    clients, canaries that the batch lacks and a coordinate that no parameter holds."""
    gen = torch.Generator().manual_seed(3)
    params = {"a": torch.zeros(2, 3, 4), "b": torch.zeros(2, 5), "c": torch.zeros(2, 2, 2)}
    coords = torch.tensor([13, 1, 7, 20, 12, 25, 3, 30])  # 30: past every parameter
    canaries = GradientCanaries(torch.ones(2, 8, dtype=torch.bool), coords, 0.3)
    rows = torch.tensor([[False, True, True, True, False, True],
                         [False, False, True, True, True, False]])
    canary = torch.tensor([[0, 4, 0, 6, 0, 2], [0, 0, 7, 3, 1, 0]])
    factor = torch.rand(2, 6, generator=gen)
    sums = {n: torch.randn(p.shape, generator=gen) for n, p in params.items()}
    want = torch.cat([s.reshape(2, -1) for s in sums.values()], dim=1)
    for k, i in rows.nonzero().tolist():
        c = int(coords[canary[k, i]])
        if c < want.shape[1]:
            want[k, c] = want[k, c] + factor[k, i] * 0.3
    DiracRows(rows, canary, 0.3, canaries.layout(params)).add_clipped(sums, factor)
    assert torch.equal(torch.cat([s.reshape(2, -1) for s in sums.values()], dim=1), want)
