"""Mutants on the language-model path: broken DP trainers of a tiny GPT-2 with LoRA, each caught
by a white-box audit, and the correct trainer PASS at the same settings:
- client-level DP-FedAvg, audited by canary clients (random unit updates in the LoRA
  parameters, read on the round models);
- example-level (centralised) DP-SGD, audited by 1,000 Dirac gradient canaries: rows of the
  batch whose gradient the trainer's own per-example engine sets before it clips, sums and
  noises them (privbench.audit.gradient_canaries), on the LoRA coordinates quietest on public
  text. The same design measures the one-run tightness of DP LoRA (eps_LB / claim).

The LM cells go through the one trainer, so the mutants patch the same functions as the tabular
mutation suite (tests/audit/test_audit_mutation_suite.py): the central mechanism's noise and
clipping, and the Claim. The design: 400 canary clients of norm 10 x clip, every client in every
round (sampling rate 1, so the Gaussian-sum bound reads the mechanism's own output), 6 rounds.
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

import privbench.trainers.ghost as ghost
import privbench.trainers.mechanisms.central as central
import privbench.trainers.per_example as per_example
from privbench.run.cell import run_cell
from privbench.spec.load import validate_suite
from privbench.spec.suite import expand
from privbench.trainers import aggregation, dpsgd
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


def lm_example_spec(folder: Path, epsilon: float = 2.0, seed: int = 0) -> dict:
    """Centralised DP-SGD (one client) on 48 messages, full batches (sampling rate 1), 4 steps."""
    return {
        "name": "lm-mutants-example", "seed": seed, "task": "causal_lm",
        "data": {"name": "support_messages", "clients": 1},
        "model": {"path": str(folder)},
        "lm": {"max_length": 32, "messages_per_client": 48, "optimizer": "sgd",
               "server_optimizer": "sgd", "canaries": {"count": 0}},
        "train": {"rounds": 4, "cohort": 1, "batch_size": 48, "lr": 0.5},
        "privacy": {"epsilon": epsilon, "delta": 1e-5, "clip": 1.0, "unit": "example"},
        "attacks": {"loss": {"enabled": False}, "canary_exposure": {"enabled": False}},
        "audit": {"enabled": True, "mode": "one-run", "surface": "iterates", "canary": "dirac",
                  "n_canaries": 1000, "canary_norm": 10.0},
    }


def lm_federated_example_spec(folder: Path, epsilon: float = 2.0, seed: int = 0) -> dict:
    """Example-level DP-SGD in a federation, as the llm suite runs it: 6 clients of 6 messages,
    cohort 3, Adam at the clients and the server, full fine-tuning, 200 Dirac canaries as
    records of random clients (on the position-embedding rows no record reaches)."""
    return {
        "name": "lm-federated-example", "seed": seed, "task": "causal_lm",
        "data": {"name": "support_messages", "clients": 6},
        "model": {"path": str(folder)},
        "lm": {"max_length": 32, "messages_per_client": 8, "finetune": "full",
               "canaries": {"count": 0}},
        "train": {"rounds": 6, "cohort": 3, "batch_size": 4, "lr": 0.01},
        "privacy": {"epsilon": epsilon, "delta": 1e-5, "clip": 1.0, "unit": "example"},
        "attacks": {"loss": {"enabled": False}, "canary_exposure": {"enabled": False}},
        "audit": {"enabled": True, "mode": "one-run", "surface": "iterates", "canary": "dirac",
                  "n_canaries": 200, "canary_norm": 10.0},
    }


def half_noise_dpsgd(template, std, generator):
    """Example level: noise multiplier 2x too small."""
    return REAL_GAUSSIAN_LIKE(template, std / 2, generator)


def no_per_example_clipping(norms, clip):
    """Example level: per-example clipping skipped (every gradient kept at its own norm)."""
    return torch.ones_like(norms)


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
    "example: noise 2x too small": [(dpsgd, "gaussian_like", half_noise_dpsgd)],
    "example: per-example clipping skipped": [(m, "clip_factor", no_per_example_clipping)
                                               for m in (per_example, ghost)],
}


@pytest.mark.parametrize("mutant", list(LM_MUTANTS))
def test_every_lm_mutant_gets_fail(mutant, saved_model, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for owner, name, replacement in LM_MUTANTS[mutant]:
        monkeypatch.setattr(owner, name, replacement)
    spec = (lm_example_spec if mutant.startswith("example") else lm_spec)(saved_model)
    verdict, failed = audit_verdict(spec, tmp_path)
    print(f"\nLM {mutant}: {verdict} by {', '.join(failed) or 'nothing'}")
    assert verdict == "FAIL"


@pytest.mark.parametrize("design", ["client", "example", "example, federated"])
def test_the_correct_lm_trainer_passes_in_at_least_19_of_20_seeds(saved_model, monkeypatch,
                                                                  tmp_path, design):
    """Coverage of the LM designs: on the correct trainer (true epsilon at most the claim),
    eps_LB stays within the claim and every forensic test passes in at least 19 of 20 runs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = {"client": lm_spec, "example": lm_example_spec,
            "example, federated": lm_federated_example_spec}[design]
    outcomes = [audit_verdict(spec(saved_model, seed=seed), tmp_path / str(seed))
                for seed in range(20)]
    alarms = [(seed, failed) for seed, (v, failed) in enumerate(outcomes) if v == "FAIL"]
    print(f"\nLM {design}: false alarms {len(alarms)}/20 {alarms}")
    assert len(alarms) <= 1


@pytest.mark.parametrize("epsilon", [4.0])
def test_the_correct_dp_lora_trainer_passes_a_tight_dirac_audit(saved_model, monkeypatch,
                                                                tmp_path, epsilon):
    """One run of DP LoRA at example level: PASS, and eps_LB at least half the claim (measured
    0.63 / 0.73 / 0.79 of it at claimed 2 / 4 / 8)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cell(expand(validate_suite(lm_example_spec(saved_model, epsilon), "t"), "t")[0],
                      tmp_path)
    row = result.metric("audit", "eps_lb")
    assert row.details["verdict"] == "PASS" and row.details["estimator"] == "gauss-sum"
    assert row.details["canary"] == "dirac" and row.details["n_canaries"] == 1000
    assert 0.5 * epsilon <= row.value <= epsilon
    assert all(m.details["verdict"] == "PASS" for m in result.metrics
               if m.scorer == "audit_forensics")
