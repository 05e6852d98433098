"""Mutants on the language-model path: broken client-level DP-FedAvg trainers of a tiny GPT-2
with LoRA, each caught by the white-box canary-client audit (random unit updates in the LoRA
parameters, read on the round models), and the correct trainer PASS at the same settings.

The LM cells go through the one trainer, so the mutants patch the same functions as the tabular
mutation suite (tests/test_audit_mutation_suite.py): the central mechanism's noise and clipping,
and the Claim. The design: 400 canary clients of norm 10 x clip, every client in every round
(sampling rate 1, so the Gaussian-sum bound reads the mechanism's own output), 6 rounds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_audit_mutation_suite import (
    REAL_GAUSSIAN_LIKE,
    audit_verdict,
    half_noise,
    under_reported_rate,
)
from test_lm_suite import saved_model  # noqa: F401

import privbench.trainers.mechanisms.central as central
from privbench.trainers import aggregation
from privbench.trainers.privacy_plan import PrivacyPlan


def lm_spec(folder: Path, seed: int = 0) -> dict:
    return {
        "name": "lm-mutants", "seed": seed, "task": "causal_lm",
        "data": {"name": "support_messages", "clients": 6},
        "model": {"path": str(folder)},
        "lm": {"max_length": 32, "messages_per_client": 4, "optimizer": "sgd",
               "server_optimizer": "sgd", "canaries": {"count": 0}},
        "train": {"rounds": 6, "cohort": 6, "batch_size": 4, "lr": 0.05},
        "privacy": {"epsilon": 2.0, "delta": 1e-5, "clip": 1.0},
        "attacks": {"loss": {"enabled": False}, "canary_exposure": {"enabled": False}},
        "audit": {"enabled": True, "mode": "one-run", "surface": "iterates",
                  "canary": "random-unit", "n_canaries": 400, "canary_norm": 10.0},
    }


def no_noise_on_lora_b(template, std, generator):
    """LoRA parameters left un-noised: the lora_B matrices get no noise."""
    noise = REAL_GAUSSIAN_LIKE(template, std, generator)
    return {n: torch.zeros_like(v) if "lora_B" in n else v for n, v in noise.items()}


def no_clipping(updates, clip):
    """Clipping skipped: every client's update is summed at its own norm."""
    return updates, aggregation.update_norms(updates)


LM_MUTANTS = {
    "noise 2x too small": [(central, "dp_fedavg", half_noise)],
    "LoRA B matrices left un-noised": [(aggregation, "gaussian_like", no_noise_on_lora_b)],
    "update clipping skipped": [(central, "clip_updates", no_clipping)],
    "sampling rate under-reported 10x": [(PrivacyPlan, "claim", under_reported_rate)],
}


@pytest.mark.parametrize("mutant", list(LM_MUTANTS))
def test_every_lm_mutant_gets_fail(mutant, saved_model, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for owner, name, replacement in LM_MUTANTS[mutant]:
        monkeypatch.setattr(owner, name, replacement)
    verdict, failed = audit_verdict(lm_spec(saved_model), tmp_path)
    print(f"\nLM {mutant}: {verdict} by {', '.join(failed) or 'nothing'}")
    assert verdict == "FAIL"


def test_the_correct_lm_trainer_passes(saved_model, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    outcomes = [audit_verdict(lm_spec(saved_model, seed), tmp_path / str(seed))
                for seed in range(3)]
    assert [v for v, _ in outcomes] == ["PASS"] * 3, outcomes
