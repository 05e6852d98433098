"""Mutation tests: deliberately broken client-level DP-FedAvg must get FAIL, the correct one PASS.

The audit is white-box on the `iterates` surface: 200 canary clients (inclusion bits at random)
each send a random unit vector of norm 10 x clip through the trainer's own clipping and noise
(privbench.audit.canaries.CanaryUpdateHook), scored by their likelihood ratio over the rounds and
certified with the one-run bound (guess counts chosen on half the canaries). The model claims
epsilon 1 at delta 1e-5; the design's ceiling is 3.49. Mutants wrap trainers.aggregation.
The sampling rate under-reported 10x changes only the claim, so it is audited at a larger design
(1,000 canaries, target epsilon 8). Noise added before clipping (each client adds its share of the
calibrated noise, then clips to C) scales noise and canary down alike: the canary's signal-to-noise
ratio then grows with canary_norm instead of being capped by the clip.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import audit_row

import privbench.trainers.mechanisms.central as central
from privbench.privacy.claim import claim_for_poisson_gaussian
from privbench.trainers import aggregation
from privbench.trainers.privacy_plan import PrivacyPlan

AUDITED = {
    "name": "mutants", "seed": 3,
    "data": {"name": "digits", "clients": 40},
    "model": {"hidden": [64]},  # a wider model: more dimensions dilute the other clients' updates
    "train": {"rounds": 10, "cohort": 40, "local_epochs": 1, "batch_size": 8, "lr": 0.1},
    "privacy": {"epsilon": 1.0, "delta": 1e-5, "clip": 1.0},
    "attacks": {"loss": {"enabled": False}},
    "audit": {"enabled": True, "mode": "one-run", "surface": "iterates", "canary": "random-unit",
              "n_canaries": 200, "canary_norm": 10.0},
}


def weak_noise(clipped, template, *, clip, noise_multiplier, expected_cohort, generator):
    """Mutant: noise 10x smaller than the calibrated noise multiplier."""
    return aggregation.dp_fedavg(clipped, template, clip=clip,
                                 noise_multiplier=noise_multiplier / 10,
                                 expected_cohort=expected_cohort, generator=generator)


def no_clipping(updates, clip):
    """Mutant: client updates are never clipped (norms still reported)."""
    return updates, aggregation.update_norms(updates)


REAL_GAUSSIAN_LIKE = aggregation.gaussian_like


def noise_on_some_layers(template, std, generator):
    """Mutant: no noise on the first layer's weights (most of the model's coordinates)."""
    noise = REAL_GAUSSIAN_LIKE(template, std, generator)
    return {name: torch.zeros_like(n) if name == "0.weight" else n for name, n in noise.items()}


def noise_then_clip(received, template, *, clip, noise_multiplier, expected_cohort, generator):
    """Mutant (with `no_clipping` in the loop): each received update gets its share of the
    calibrated noise, N(0, (z C)^2 / expected_cohort), and is clipped to C only then; the server
    sums and divides by the expected cohort, adding no noise of its own."""
    if received is None:
        total = {name: torch.zeros_like(t) for name, t in template.items()}
    else:
        std = noise_multiplier * clip / math.sqrt(expected_cohort)
        noisy = {name: u + torch.randn(u.shape, generator=generator, dtype=u.dtype) * std
                 for name, u in received.items()}
        clipped, _ = aggregation.clip_updates(noisy, clip)
        total = {name: u.sum(dim=0) for name, u in clipped.items()}
    return {name: v / expected_cohort for name, v in total.items()}, total


MUTANTS = {
    "correct": {},
    "noise_10x_too_small": {"dp_fedavg": weak_noise},
    "client_updates_not_clipped": {"clip_updates": no_clipping},
    "noise_on_some_layers": {"gaussian_like": noise_on_some_layers},
    "noise_added_before_clipping": {"clip_updates": no_clipping, "dp_fedavg": noise_then_clip},
}
EXPECTED = {"correct": "PASS", "noise_10x_too_small": "FAIL", "client_updates_not_clipped": "FAIL",
            "noise_on_some_layers": "FAIL", "noise_added_before_clipping": "FAIL"}


@pytest.mark.parametrize("variant", list(MUTANTS))
def test_audit_verdict_on_broken_and_correct_dp_fedavg(variant, monkeypatch, tmp_path: Path):
    for name, replacement in MUTANTS[variant].items():
        # dp_fedavg reads gaussian_like from the aggregation module; the central mechanism
        # (trainers/mechanisms/central.py) reads the others from its own module.
        monkeypatch.setattr(aggregation if name == "gaussian_like" else central, name, replacement)
    row = audit_row(AUDITED, tmp_path)
    print(f"\n{variant}: claimed {row.details['claimed_epsilon']:.3f}, eps_LB {row.value:.3f}, "
          f"{row.details['method']}, mu_LB {row.details['mu_lb']:.3f} (claimed mu "
          f"{row.details['mu_claimed']:.3f}), verdict {row.details['verdict']}, "
          f"caught eps >= {row.details['eps_caught']:.2f}")
    assert row.details["verdict"] == EXPECTED[variant]
    assert row.details["claimed_epsilon"] == pytest.approx(1.0, abs=1e-3)
    assert row.details["n"] == 200 and row.details["alpha"] == 0.05


def test_under_reported_sampling_rate_gets_fail(monkeypatch, tmp_path: Path):
    """Mutant: the Claim is accounted with a sampling rate 10x below the one that ran. Training is
    untouched, so the same evidence held against the honest claim (8) must not FAIL: the
    Gaussian-sum bound's mu_LB stays below the honest claim's mu (10x the under-reported one,
    since mu is proportional to the sampling rate)."""
    real = PrivacyPlan.claim

    def under_reported(self, ledger, rounds_run, clip):
        honest = real(self, ledger, rounds_run, clip)
        return claim_for_poisson_gaussian(
            noise_multiplier=honest.noise_multiplier, sampling_rate=honest.sampling_rate / 10,
            steps=honest.steps, delta=honest.delta, target_epsilon=honest.target_epsilon,
            clip=honest.clip, unit=honest.unit, neighbouring=honest.neighbouring,
            guarantee_against=honest.guarantee_against)

    monkeypatch.setattr(PrivacyPlan, "claim", under_reported)
    spec = {**AUDITED, "data": {"name": "digits", "clients": 200},
            "train": {**AUDITED["train"], "cohort": 200},
            "privacy": {**AUDITED["privacy"], "epsilon": 8.0},
            "audit": {**AUDITED["audit"], "n_canaries": 1000}}
    row = audit_row(spec, tmp_path)
    print(f"\nsampling_rate_under_reported_10x: claimed {row.details['claimed_epsilon']:.3f} "
          f"(honest: 8), eps_LB {row.value:.3f}, ceiling {row.details['eps_ceiling']:.2f}, "
          f"verdict {row.details['verdict']}")
    assert row.details["claimed_epsilon"] < 2.0
    assert row.details["verdict"] == "FAIL"
    assert row.details["mu_lb"] > row.details["mu_claimed"]
    assert row.details["mu_lb"] <= 10 * row.details["mu_claimed"]
