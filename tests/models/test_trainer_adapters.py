"""The one trainer's DP guarantees on every adapter: the MLP, the zoo's CNN and a tiny GPT-2 with
LoRA, through the same task builders the suite uses.

- The noise the server adds has the claimed spread: with a client learning rate of 1e-9 every
  update is ~0, so a round's step is the noise alone, server_lr * N(0, (z C)^2) / expected
  cohort on every trainable coordinate (thousands of them: the sample std is within 5%).
- `privacy.max_epsilon` stops the run before a round would overspend, and the Claim is the
  ledger's epsilon of the rounds that ran.
"""

from __future__ import annotations

import math

import pytest
import torch

from privbench.run.tasks import build_task
from privbench.spec.load import validate_suite
from privbench.spec.suite import expand
from privbench.trainers import train_fedavg

TABULAR = {"name": "adapters", "seed": 0, "data": {"name": "digits", "clients": 20},
           "train": {"rounds": 4, "cohort": 10, "batch_size": 16, "lr": 1e-9},
           "privacy": {"epsilon": 4.0, "delta": 1e-5, "clip": 1.0},
           "attacks": {"loss": {"enabled": False}}}


def _spec(adapter: str, folder) -> dict:
    if adapter == "mlp":
        return {**TABULAR, "model": {"hidden": [64]}}
    if adapter == "cnn":
        return {**TABULAR, "model": {"name": "cnn"}}
    return {**TABULAR, "task": "causal_lm", "data": {"name": "support_messages", "clients": 20},
            "model": {"path": str(folder)},
            "lm": {"max_length": 32, "messages_per_client": 2, "optimizer": "sgd",
                   "server_optimizer": "sgd", "canaries": {"count": 0}},
            "attacks": {"loss": {"enabled": False}, "canary_exposure": {"enabled": False}}}


def _train(spec: dict, tmp_path):
    cell = expand(validate_suite(spec, "test"), "test")[0]
    task = build_task(cell, tmp_path)
    s = cell.spec
    return cell, train_fedavg(task.adapter, task.clients, task.public, task.train, s.privacy,
                              s.seed, optimizer=task.optimizer,
                              server_optimizer=task.server_optimizer, **task.hooks)


@pytest.mark.parametrize("adapter", ["mlp", "cnn", "gpt2-lora"])
def test_the_noise_has_the_claimed_spread_on_every_adapter(adapter, saved_model,
                                                           tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cell, trained = _train(_spec(adapter, saved_model), tmp_path)
    claim, spec = trained.claim, cell.spec
    expected = (spec.train.server_lr * claim.noise_multiplier * spec.privacy.clip
                / (spec.train.cohort))
    before = trained.observations.initial_params
    for after in trained.observations.iterates:
        step = torch.cat([(after[n] - before[n]).flatten() for n in before]).double()
        assert step.numel() > 1000
        assert float(step.std()) == pytest.approx(expected, rel=0.05), adapter
        assert abs(float(step.mean())) < 4 * expected / math.sqrt(step.numel())
        before = after


@pytest.mark.parametrize("adapter", ["mlp", "cnn", "gpt2-lora"])
def test_max_epsilon_stops_every_adapter_within_budget(adapter, saved_model,
                                                       tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = _spec(adapter, saved_model)
    spec = {**spec, "privacy": {**spec["privacy"], "max_epsilon": 3.0}}
    _, trained = _train(spec, tmp_path)
    ran = sum(1 for h in trained.history if "stopped" not in h)
    assert 0 < ran < 4 and trained.claim.epsilon <= 3.0
    assert any("max_epsilon" in h.get("stopped", "") for h in trained.history)
