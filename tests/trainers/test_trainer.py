"""The trainer: vectorised local SGD equals a per-client loop; clipping and noise are as claimed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from privbench.data.partition import partition
from privbench.data.splits import load_split
from privbench.models import build_model
from privbench.models.adapter import ClassifierAdapter
from privbench.spec.schema import DataSpec, ModelSpec, PrivacySpec, TrainSpec
from privbench.trainers import tabular_inputs, train_fedavg
from privbench.trainers.aggregation import clip_updates, dp_fedavg, update_norms
from privbench.trainers.client_data import ClientData
from privbench.trainers.client_update import local_sgd


def _loop_reference(model, params, x, y, counts, epochs, batch_size, lr, seed):
    """Plain autograd SGD, one client at a time, with the same minibatch order as local_sgd."""
    gen = torch.Generator().manual_seed(seed)
    k, n_max = y.shape
    valid = torch.arange(n_max).unsqueeze(0) < counts.unsqueeze(1)
    orders = []
    for _ in range(epochs):
        keys = torch.rand(k, n_max, generator=gen).masked_fill(~valid, 2.0)
        orders.append(keys.argsort(dim=1))
    updates = []
    for c in range(k):
        p = {n: v.clone().requires_grad_(True) for n, v in params.items()}
        for order in orders:
            idx_all = order[c, : int(counts[c])]
            for s in range(0, int(counts[c]), batch_size):
                idx = idx_all[s:s + batch_size]
                out = torch.func.functional_call(model, p, (x[c, idx],))
                loss = F.cross_entropy(out, y[c, idx])
                grads = torch.autograd.grad(loss, list(p.values()))
                with torch.no_grad():
                    p = {n: (v - lr * g).requires_grad_(True)
                         for (n, v), g in zip(p.items(), grads, strict=True)}
        updates.append({n: (p[n] - params[n]).detach() for n in params})
    return {n: torch.stack([u[n] for u in updates]) for n in params}


def test_vectorised_local_sgd_equals_a_loop_over_clients():
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[8]), 5, 3, seed=0)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    counts = torch.tensor([7, 3, 12, 1])  # unequal shards, one smaller than a batch
    x = torch.randn(4, 12, 5)
    y = torch.randint(0, 3, (4, 12))
    got, _ = local_sgd(ClassifierAdapter(model), params, ClientData({"x": x, "y": y}, counts),
                       epochs=2, batch_size=4, lr=0.3,
                       generator=torch.Generator().manual_seed(11))
    want = _loop_reference(model, params, x, y, counts, 2, 4, 0.3, seed=11)
    for name in params:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_clipping_bounds_every_update_and_keeps_small_ones():
    updates = {"w": torch.tensor([[3.0, 4.0], [0.3, 0.4]]), "b": torch.tensor([[0.0], [0.0]])}
    clipped, norms = clip_updates(updates, clip=1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
    torch.testing.assert_close(update_norms(clipped), torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(clipped["w"][1], updates["w"][1])


def test_dp_fedavg_noise_has_the_claimed_spread():
    """Noise on zero updates: std of the averaged update is z * C / expected cohort."""
    template = {"w": torch.zeros(200, 100)}
    z, clip, cohort = 1.3, 0.7, 10.0
    step, noised_sum = dp_fedavg(None, template, clip=clip, noise_multiplier=z,
                                 expected_cohort=cohort, generator=torch.Generator().manual_seed(0))
    sample = step["w"].flatten().double().numpy()
    n = sample.size
    want = z * clip / cohort
    # chi-square 99.9% interval for the standard deviation of n normal draws
    lo = want * math.sqrt(stats.chi2.ppf(0.0005, n) / n)
    hi = want * math.sqrt(stats.chi2.ppf(0.9995, n) / n)
    assert lo < sample.std() < hi
    assert abs(sample.mean()) < 4 * want / math.sqrt(n)
    torch.testing.assert_close(noised_sum["w"] / cohort, step["w"])


def _train(epsilon: float, seed: int = 0):
    data_spec = DataSpec(clients=20)
    data = load_split(data_spec, seed)
    shards = partition(data_spec, data.y_train, seed)
    model = build_model(ModelSpec(hidden=[16]), data.n_features, data.n_classes, seed)
    train = TrainSpec(rounds=6, cohort=5, batch_size=8)
    return train_fedavg(*tabular_inputs(model, data, shards), train, PrivacySpec(epsilon=epsilon),
                        seed)


def test_training_is_deterministic_and_the_claim_reflects_what_ran():
    a, b = _train(4.0), _train(4.0)
    for name, p in a.observations.final_params.items():
        assert torch.equal(p, b.observations.final_params[name])
    claim = a.claim
    assert claim.steps == 6 and claim.sampling_rate == pytest.approx(5 / 20)
    assert claim.noise_multiplier > 0 and claim.epsilon <= 4.0 + 1e-9
    assert claim.epsilon == pytest.approx(4.0, rel=0.02)  # calibrated, not wastefully loose
    assert claim.unit == "client" and claim.sampling == "poisson"
    assert len(a.observations.iterates) == 6 and a.observations.exposes("iterates")
    assert [r["round"] for r in a.history] == list(range(1, 7))


def test_no_dp_baseline_has_no_noise_and_no_guarantee():
    t = _train(math.inf)
    assert t.claim.noise_multiplier == 0 and math.isinf(t.claim.epsilon)
    assert t.claim.guarantee_against == [] and t.claim.clip is None
    assert all(np.isfinite(p.numpy()).all() for p in t.observations.final_params.values())
