"""The white-box audit of example-level DP-SGD: Dirac gradient canaries, one run and multi-run.

Mutants of the sample-level trainer must get FAIL and the correct trainer PASS; the multi-run audit
(Gaussian-DP route, 2,000 runs per world) must be tight (eps_LB / claimed >= 0.5) at claimed
epsilon 2, 4 and 8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import audit_row

from privbench.audit.gradient_canaries import dirac_log_likelihood_ratio
from privbench.models import build_model
from privbench.spec.schema import ModelSpec
from privbench.trainers import aggregation, dpsgd
from privbench.trainers.client_data import ClientData
from privbench.trainers.dpsgd import GradientCanaries, dp_sgd
from privbench.trainers.linear_stack import classifier_adapter

# Centralised full-batch DP-SGD on digits (about 900 training records, q = 1): every step is an
# unsampled Gaussian, so the claim is mu-GDP.
DPSGD = {
    "name": "dpsgd-audit", "seed": 0,
    "data": {"name": "digits", "clients": 1},
    "model": {"hidden": []},
    "train": {"rounds": 5, "cohort": 1, "batch_size": 900, "lr": 2.0},
    "privacy": {"epsilon": 2.0, "delta": 1e-5, "clip": 1.0, "unit": "example"},
    "attacks": {"loss": {"enabled": False}},
    "audit": {"enabled": True, "mode": "multi-run", "surface": "iterates", "canary": "dirac",
              "runs": 200, "canary_norm": 10.0},
}


def audited(tmp_path: Path, **changes) -> dict:
    row = audit_row({**DPSGD, **{k: {**DPSGD[k], **v} for k, v in changes.items()}}, tmp_path)
    return {"eps_lb": row.value, **row.details}


def no_clipping(norms: torch.Tensor, clip: float) -> torch.Tensor:
    """Mutant: per-example gradients are never clipped."""
    return torch.ones_like(norms)


def weak_noise(template, std, generator):
    """Mutant: noise 10x smaller than the calibrated noise multiplier."""
    return aggregation.gaussian_like(template, std / 10, generator)


MUTANTS = {"correct": {}, "clipping_skipped": {(aggregation, "clip_factor"): no_clipping},
           "noise_10x_too_small": {(dpsgd, "gaussian_like"): weak_noise}}


@pytest.mark.parametrize("mode, audit", [
    ("multi-run", {}),
    ("one-run", {"mode": "one-run", "n_canaries": 200}),  # 192 coordinates of blank pixels
])
@pytest.mark.parametrize("variant", list(MUTANTS))
def test_dpsgd_audit_verdict_on_broken_and_correct_trainer(variant, mode, audit, monkeypatch,
                                                           tmp_path: Path):
    for (module, name), replacement in MUTANTS[variant].items():
        monkeypatch.setattr(module, name, replacement)
    model = {"hidden": [64]} if mode == "one-run" else {}
    got = audited(tmp_path, audit=audit, model=model)
    print(f"\n{mode} {variant}: claimed {got['claimed_epsilon']:.3f}, eps_LB {got['eps_lb']:.3f}"
          f" ({got['method']}), verdict {got['verdict']}")
    assert got["verdict"] == ("PASS" if variant == "correct" else "FAIL")
    assert got["claimed_epsilon"] == pytest.approx(2.0, abs=1e-3)


@pytest.mark.parametrize("epsilon", [2.0, 4.0, 8.0])
def test_multi_run_audit_of_correct_dpsgd_is_tight(epsilon, tmp_path: Path):
    got = audited(tmp_path, privacy={"epsilon": epsilon},
                  audit={"runs": 2000, "canary_norm": 1.0})
    print(f"\nclaimed {got['claimed_epsilon']:.3f}: eps_LB {got['eps_lb']:.3f} "
          f"(tightness {got['tightness']:.2f}, {got['method']}; Clopper-Pearson "
          f"{got['clopper_pearson_eps']:.3f}), {got['false_positives']} FP / "
          f"{got['false_negatives']} FN of {got['n_out']} + {got['n_in']} runs")
    assert got["verdict"] == "PASS"
    assert got["method"] == "multi-run two-world gdp"
    assert got["tightness"] >= 0.5


@pytest.mark.parametrize("per_example", ["vmap", "ghost", "adapter"])
def test_gradient_canary_moves_its_coordinate_by_its_clipped_norm(per_example):
    """Noise off, q = 1: a planted canary adds exactly lr * min(norm, C) / B per step on its
    coordinate (client 0), nothing where it is absent (client 1)."""
    model = build_model(ModelSpec(hidden=[4]), 3, 2, seed=0)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.zeros(2, 5, 3), torch.zeros(2, 5, dtype=torch.long)
    coord = 2  # first layer weight (0, 2), fed by input feature 2: blank here, so no gradient

    def run(canaries):
        return dp_sgd(classifier_adapter(model), params,
                      ClientData({"x": x, "y": y}, torch.tensor([5, 5])), steps=3,
                      sampling_rate=1.0,
                      expected_batch=5, lr=0.1, clip=0.5, noise_multiplier=0.0,
                      generator=torch.Generator().manual_seed(0),
                      noise_generator=torch.Generator().manual_seed(1),
                      engine=per_example, canaries=canaries)

    present = torch.tensor([[True], [False]])
    with_canary = run(GradientCanaries(present, torch.tensor([coord]), norm=4.0))
    without = run(None)
    moved = (with_canary["0.weight"] - without["0.weight"]).reshape(2, -1)
    assert moved[0, coord].item() == pytest.approx(-3 * 0.1 * 0.5 / 5)
    moved[0, coord] = 0
    assert torch.count_nonzero(moved) == 0


def test_likelihood_ratio_is_the_gaussian_test_at_full_batch():
    """q = 1: log LR = (c S - c^2 T / 2) / var for T steps, linear in the observed sum S."""
    sums = np.array([[0.0], [1.0], [2.5]])
    got = dirac_log_likelihood_ratio(sums, np.array([4]), np.array([4 * 2.0**2]), 1.0, 0.5)
    want = (0.5 * 4 * sums[:, 0] - 0.5**2 * 16 / 2) / 16
    np.testing.assert_allclose(got, want)
