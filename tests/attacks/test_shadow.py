"""Shadow models: one batched run mirrors the target's training exactly, and is cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import privbench.attacks.membership.shadows as shadow_mod
from privbench.attacks.membership.shadows import (
    ShadowPlan,
    batched_logits,
    cached_shadows,
    train_shadows,
)
from privbench.data.partition import partition
from privbench.data.splits import load_split
from privbench.models import build_model
from privbench.spec.schema import CellSpec
from privbench.trainers import tabular_inputs, train_fedavg


def _setup(clients: int = 4, epsilon: float = 4.0, unit: str = "client", **train):
    spec = CellSpec.model_validate({
        "data": {"name": "breast_cancer", "clients": clients},
        "model": {"hidden": [8]},
        "train": {"rounds": 3, "cohort": 2, "local_epochs": 1, "batch_size": 8, "lr": 0.1,
                  **train},
        "privacy": {"epsilon": epsilon, "clip": 0.5, "unit": unit}})
    data = load_split(spec.data, 0)
    model = build_model(spec.model, data.n_features, data.n_classes, 0)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    return spec, data, model, init


@pytest.mark.parametrize("clients, cohort, epsilon", [
    (4, 2, 4.0), (1, 1, 4.0), (1, 1, float("inf"))])  # cohort 1 of 1: one client per run
def test_a_shadow_given_the_targets_records_and_seed_reproduces_the_target_exactly(
        clients, cohort, epsilon):
    """Same records, partition, client sampling, local SGD, clip and executed DP noise."""
    spec, data, model, init = _setup(clients, epsilon, cohort=cohort)
    shards = partition(spec.data, data.y_train, 0)
    target = build_model(spec.model, data.n_features, data.n_classes, 0)
    trained = train_fedavg(*tabular_inputs(target, data, shards), spec.train, spec.privacy, 0)
    assert (trained.claim.noise_multiplier > 0) == (epsilon < float("inf"))
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    inclusion = (np.arange(len(y)) < len(data.y_train))[None, :]
    plan = ShadowPlan(spec.data, spec.train, trained.claim.noise_multiplier, spec.privacy.clip,
                      seed=0)
    params = train_shadows(model, init, x, y, inclusion, plan)
    for name, p in trained.observations.final_params.items():
        torch.testing.assert_close(params[name][0], p)


@pytest.mark.parametrize("clients, cohort", [(4, 2), (1, 1)])
def test_a_shadow_replays_an_example_level_target_exactly(clients, cohort):
    """Example-level DP-SGD targets get example-level shadows: the same Poisson record sampling,
    local steps, per-example clipping and noise, so LiRA and RMIA mirror what the target ran."""
    spec, data, model, init = _setup(clients, 4.0, unit="example", cohort=cohort)
    shards = partition(spec.data, data.y_train, 0)
    target = build_model(spec.model, data.n_features, data.n_classes, 0)
    trained = train_fedavg(*tabular_inputs(target, data, shards), spec.train, spec.privacy, 0)
    assert trained.claim.unit == "example" and trained.claim.noise_multiplier > 0
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    inclusion = (np.arange(len(y)) < len(data.y_train))[None, :]
    plan = ShadowPlan(spec.data, spec.train, trained.claim.noise_multiplier, spec.privacy.clip,
                      seed=0, example_level=True)
    params = train_shadows(model, init, x, y, inclusion, plan)
    for name, p in trained.observations.final_params.items():
        torch.testing.assert_close(params[name][0], p)
    client_level = train_shadows(model, init, x, y, inclusion,
                                 ShadowPlan(spec.data, spec.train, trained.claim.noise_multiplier,
                                            spec.privacy.clip, seed=0))
    assert not all(torch.equal(client_level[n][0], p)
                   for n, p in trained.observations.final_params.items())


def test_batched_shadows_equal_shadows_trained_one_at_a_time():
    """Full-batch local steps and every client each round: training has no randomness, so the
    K-row batched run must match K separate runs."""
    spec, data, model, init = _setup(batch_size=1000, cohort=4)
    plan = ShadowPlan(spec.data, spec.train, 0.0, None, seed=5)
    rng = np.random.default_rng(0)
    inclusion = rng.random((3, len(data.y_train))) < 0.5
    batched = train_shadows(model, init, data.x_train, data.y_train, inclusion, plan)
    for k in range(3):  # shadow k partitions its records with seed plan.seed + k
        one = train_shadows(model, init, data.x_train, data.y_train, inclusion[k:k + 1],
                            ShadowPlan(spec.data, spec.train, 0.0, None, seed=5 + k))
        for name in one:
            torch.testing.assert_close(batched[name][k], one[name][0], rtol=1e-5, atol=1e-6)
    logits = batched_logits(model, batched, data.x_test)
    assert logits.shape == (3, len(data.y_test), data.n_classes)
    with torch.no_grad():
        direct = torch.func.functional_call(model, {n: p[2] for n, p in batched.items()},
                                            (torch.from_numpy(data.x_test),))
    np.testing.assert_allclose(logits[2], direct.double().numpy(), rtol=1e-5, atol=1e-6)


def test_shadows_are_cached_by_content_hash(tmp_path, monkeypatch):
    spec, data, model, init = _setup()
    plan = ShadowPlan(spec.data, spec.train, 0.0, None, seed=1)
    inclusion = np.random.default_rng(0).random((2, len(data.y_train))) < 0.5
    first = cached_shadows(tmp_path, model, init, data.x_train, data.y_train, inclusion, plan)
    manifests = list(tmp_path.glob("*.json"))
    assert len(manifests) == 1 and len(list(tmp_path.glob("*.safetensors"))) == 1
    assert json.loads(manifests[0].read_text())["shadows"] == 2

    def boom(*args, **kwargs):
        raise AssertionError("should have been loaded from the cache")

    monkeypatch.setattr(shadow_mod, "train_shadows", boom)
    again = cached_shadows(tmp_path, model, init, data.x_train, data.y_train, inclusion, plan)
    for name in first:
        torch.testing.assert_close(again[name], first[name])
    with pytest.raises(AssertionError, match="cache"):  # other inclusion bits: another key
        cached_shadows(tmp_path, model, init, data.x_train, data.y_train, ~inclusion, plan)
