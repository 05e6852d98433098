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

from privbench.audit.canaries import plant_adapter_dirac_canaries
from privbench.audit.gradient_canaries import dirac_log_likelihood_ratio
from privbench.models import build_model
from privbench.spec.schema import CellSpec, ModelSpec
from privbench.trainers import aggregation, dpsgd
from privbench.trainers.client_data import ClientData
from privbench.trainers.client_update import local_sgd
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


@pytest.mark.parametrize("vectorised", [True, False])
def test_without_dp_a_gradient_canary_is_a_record_of_its_client(vectorised):
    """Local SGD (no DP), one full batch per epoch: a canary record of client 0 is counted in the
    batch mean like a record whose gradient is norm * e_coord (each of 3 steps adds
    lr * norm / 6 for 5 records and the canary); client 1 holds none and trains as without."""
    model = build_model(ModelSpec(hidden=[4]), 3, 2, seed=0)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.zeros(2, 5, 3), torch.zeros(2, 5, dtype=torch.long)
    coord = 2  # first layer weight (0, 2), fed by input feature 2: blank, so no real gradient

    def run(canaries):
        return local_sgd(classifier_adapter(model), params,
                         ClientData({"x": x, "y": y}, torch.tensor([5, 5])), epochs=3,
                         batch_size=8, lr=0.1, generator=torch.Generator().manual_seed(0),
                         vectorised=vectorised, canaries=canaries)[0]

    present = torch.tensor([[True], [False]])
    with_canary = run(GradientCanaries(present, torch.tensor([coord]), norm=4.0))
    without = run(None)
    assert with_canary["0.weight"].reshape(2, -1)[0, coord].item() == pytest.approx(
        -3 * 0.1 * 4.0 / 6)
    for name in without:
        torch.testing.assert_close(with_canary[name][1], without[name][1])
    assert not torch.allclose(with_canary["0.bias"][0], without["0.bias"][0])  # 5/6 of the mean


def test_dirac_canaries_are_records_of_random_clients_blind_to_their_bits():
    """Each included canary is a record of one real client, drawn uniformly for every canary
    (so the owners do not depend on the bits) on coordinates no record moves; one client holds
    them all in centralised DP-SGD."""
    model = build_model(ModelSpec(hidden=[4]), 3, 2, seed=0)
    batch = {"x": torch.zeros(6, 3), "y": torch.zeros(6, dtype=torch.long)}
    spec = CellSpec.model_validate({**DPSGD, "audit": {**DPSGD["audit"], "n_canaries": 8}})
    adapter = classifier_adapter(model)
    canaries, gradient = plant_adapter_dirac_canaries(spec, adapter, batch, batch, 5)
    assert gradient.present.shape == (5, 8)
    assert (gradient.present.sum(dim=0).numpy() == canaries.bits).all()  # one owner each
    owners = canaries.client_ids[canaries.bits]
    assert len(set(owners)) > 1 and (gradient.present[owners, np.flatnonzero(canaries.bits)]).all()
    assert (canaries.client_ids[~canaries.bits] == -1).all()
    loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
    flat = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))])
    assert len(set(canaries.coords)) == 8 and (flat[canaries.coords] == 0).all()  # none moves
    central, _ = plant_adapter_dirac_canaries(spec, adapter, None, batch, 1)
    assert (central.bits == canaries.bits).all() and set(central.client_ids) <= {-1, 0}


def test_likelihood_ratio_is_the_gaussian_test_at_full_batch():
    """q = 1: log LR = (c S - c^2 T / 2) / var for T steps, linear in the observed sum S."""
    sums = np.array([[0.0], [1.0], [2.5]])
    got = dirac_log_likelihood_ratio(sums, np.array([4]), np.array([4 * 2.0**2]), 1.0, 0.5)
    want = (0.5 * 4 * sums[:, 0] - 0.5**2 * 16 / 2) / 16
    np.testing.assert_allclose(got, want)


@pytest.mark.parametrize(("steps", "variance", "q", "signal", "spread"), [
    (4, 4 * 1.2**2, 1 / 3, 1.0, 1.0),  # the DP LoRA design's segments
    (140, 140 * 0.8**2, 0.05, 1.0, 1.0),  # one long segment (final weights)
    (4, 4 * 1.2**2, 1 / 3, 1.0, 1e3),  # huge |t|: logsumexp where Horner's terms overflow
    (5, 1e-3, 0.2, 10.0, 1e3),  # coefficients too wide a span: logsumexp
    (2000, 2000 * 0.3**2, 0.01, 1.0, 1.0),  # a long segment of a wide span
])
def test_likelihood_ratio_is_the_log_sum_exp_of_its_mixture(steps, variance, q, signal, spread):
    """log sum_k Binomial(k; n, q) exp((c k x - c^2 k^2 / 2) / var), whichever way it is
    evaluated; a NaN sum stays NaN."""
    from scipy import special, stats

    rng = np.random.default_rng(7)
    sums = rng.normal(size=(400, 2)) * np.sqrt(variance) * spread + (
        rng.random((400, 2)) < 0.5) * signal * steps * q
    sums[0, 1] = np.nan
    got = dirac_log_likelihood_ratio(sums, np.array([steps, steps]),
                                     np.array([variance, variance]), q, signal)
    k = np.arange(steps + 1)
    terms = (stats.binom.logpmf(k, steps, q)
             + (signal * k * sums[..., None] - 0.5 * signal**2 * k**2) / variance)
    want = special.logsumexp(terms, axis=-1).sum(axis=-1)
    assert np.isnan(got[0]) and np.isfinite(got[1:]).all()
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-12, atol=1e-12)
