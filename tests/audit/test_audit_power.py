"""One-run white-box audits that catch a noise multiplier 2x too small, and are tight on the
correct trainer, for client-level DP-FedAvg and example-level DP-SGD.

The design: 2,000 canaries on the `iterates` surface (random-unit canary clients of norm 10 x clip,
orthonormal, in a 128-unit MLP so that they span a fifth of its 9,610 parameters; Dirac gradient
canaries on the coordinates of always-blank pixels, hence an 800-unit hidden layer)
and the Gaussian-sum bound (audit.estimator = "auto"). The mutant halves the noise the trainer
adds (real epsilon about twice the claim) and must get FAIL in ONE run; the correct trainer must
PASS with eps_LB / claimed at least 0.6. The power row beside the verdict states what the design
would have caught.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import audit_row

import privbench.trainers.mechanisms.central as central
from privbench.trainers import aggregation, dpsgd

CLIENT = {
    "name": "power-client", "seed": 1,
    "data": {"name": "digits", "clients": 40},
    "model": {"hidden": [128]},
    "train": {"rounds": 10, "cohort": 40, "local_epochs": 1, "batch_size": 8, "lr": 0.1},
    "privacy": {"epsilon": 1.0, "delta": 1e-5, "clip": 1.0},
    "attacks": {"loss": {"enabled": False}},
    "audit": {"enabled": True, "mode": "one-run", "surface": "iterates", "canary": "random-unit",
              "n_canaries": 2000, "canary_norm": 10.0},
}
EXAMPLE = {
    "name": "power-example", "seed": 1,
    "data": {"name": "digits", "clients": 1},
    "model": {"hidden": [800]},
    "train": {"rounds": 5, "cohort": 1, "batch_size": 900, "lr": 2.0},
    "privacy": {"epsilon": 1.0, "delta": 1e-5, "clip": 1.0, "unit": "example"},
    "attacks": {"loss": {"enabled": False}},
    "audit": {"enabled": True, "mode": "one-run", "surface": "iterates", "canary": "dirac",
              "n_canaries": 2000, "canary_norm": 10.0},
}
SPECS = {"client": CLIENT, "example": EXAMPLE}


def half_noise_fedavg(clipped, template, *, clip, noise_multiplier, expected_cohort, generator):
    """Mutant: the server adds half the calibrated noise."""
    return aggregation.dp_fedavg(clipped, template, clip=clip,
                                 noise_multiplier=noise_multiplier / 2,
                                 expected_cohort=expected_cohort, generator=generator)


def half_noise_dpsgd(template, std, generator):
    """Mutant: DP-SGD adds half the calibrated noise to each step's clipped sum."""
    return aggregation.gaussian_like(template, std / 2, generator)


def audited(unit: str, epsilon: float, tmp_path: Path) -> dict:
    spec = SPECS[unit]
    row = audit_row({**spec, "privacy": {**spec["privacy"], "epsilon": epsilon}}, tmp_path)
    got = {"eps_lb": row.value, **row.details}
    print(f"\n{unit} claimed {got['claimed_epsilon']:.3f}: eps_LB {got['eps_lb']:.3f} "
          f"(tightness {got['tightness']:.2f}, {got['method']}, mu_LB {got['mu_lb']:.3f} vs "
          f"claimed mu {got['mu_claimed']:.3f}), verdict {got['verdict']}; this audit would "
          f"have caught epsilon >= {got['eps_caught']:.2f}")
    return got


# Client-level at claimed epsilon 2 and 4 was measured too (FAIL, eps_LB 4.07 and 8.35; about 45 s a
# run, so not repeated here); example-level runs take about 3 s each.
@pytest.mark.parametrize("unit, epsilon", [("client", 1.0), ("client", 8.0), ("example", 1.0),
                                           ("example", 2.0), ("example", 4.0),
                                           ("example", 8.0)])
def test_noise_multiplier_2x_too_small_fails_in_one_run(unit, epsilon, monkeypatch,
                                                       tmp_path: Path):
    if unit == "client":
        monkeypatch.setattr(central, "dp_fedavg", half_noise_fedavg)
    else:
        monkeypatch.setattr(dpsgd, "gaussian_like", half_noise_dpsgd)
    got = audited(unit, epsilon, tmp_path)
    assert got["claimed_epsilon"] == pytest.approx(epsilon, abs=1e-3)
    assert got["verdict"] == "FAIL"


@pytest.mark.parametrize("epsilon", [2.0, 4.0, 8.0])
@pytest.mark.parametrize("unit", ["client", "example"])
def test_one_run_white_box_audit_of_the_correct_trainer_is_tight(unit, epsilon,
                                                                 tmp_path: Path):
    got = audited(unit, epsilon, tmp_path)
    assert got["verdict"] == "PASS"
    assert got["tightness"] >= 0.6
    assert epsilon < got["eps_caught"] < 2.5 * epsilon  # the power is stated, and useful
