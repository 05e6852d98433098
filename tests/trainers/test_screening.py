"""Server screening decides in the model's dtype exactly what a float64 check decides: NaN, Inf,
norms beyond the bound, and finite updates too large for a float32 sum of squares."""

from __future__ import annotations

import torch

from privbench.trainers.screening import batch_problems, problem_with


def test_batched_screening_gives_the_float64_reasons_row_by_row():
    gen = torch.Generator().manual_seed(0)
    template = {"w": torch.zeros(6, 5), "b": torch.zeros(5)}
    updates = {n: torch.randn(40, *t.shape, generator=gen) for n, t in template.items()}
    updates["w"][3, 1, 2] = float("nan")
    updates["b"][7, 0] = float("inf")
    updates["w"][9] *= 100.0  # beyond the bound
    updates["b"][11] = 1e30  # finite, but its float32 sum of squares overflows
    updates["w"][12, 0, 0] = -float("inf")
    updates["b"][12, 1] = float("nan")  # the first tensor's reason is reported
    reasons = batch_problems(updates, template, max_norm=50.0)
    want = [problem_with({n: u[i] for n, u in updates.items()}, template, 50.0)
            for i in range(40)]
    assert reasons == want
    assert reasons[3] == "w: NaN or Inf" and reasons[7] == "b: NaN or Inf"
    assert reasons[11].startswith("norm 2.24e+30 beyond")
    assert reasons[12] == "w: NaN or Inf" and reasons[9].startswith("norm ")
    assert sum(r is not None for r in reasons) == 5
