"""A broader mutation suite: subtle bugs a DP engineer makes, each caught by the default one-run
white-box design (Gaussian-sum eps_LB and the noise-forensics rows), with the correct trainer
PASS in at least 19 of 20 seeds at the same settings (the false-alarm rate, measured).

An audit's verdict is FAIL when eps_LB exceeds the claim or any forensic test fails. Designs:
client-level DP-FedAvg with 1,000 random-unit canary clients (norm 10 x clip) on `iterates`, and
centralised full-batch DP-SGD with 192 Dirac canaries on the coordinates of always-blank pixels.
Both are sized to run in about a second a seed. Mutants wrap or monkeypatch the trainer's own
functions; the Claim mutants change only what is accounted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import privbench.trainers.mechanisms.central as central
from privbench.privacy.claim import claim_for_poisson_gaussian
from privbench.run.cell import run_cell
from privbench.spec.load import validate_suite
from privbench.spec.suite import expand
from privbench.trainers import aggregation, dpsgd
from privbench.trainers.privacy_plan import PrivacyPlan

CLIENT = {
    "name": "mutants-client", "seed": 0,
    "data": {"name": "digits", "clients": 20},
    "model": {"hidden": [64]},
    "train": {"rounds": 6, "cohort": 20, "local_epochs": 1, "batch_size": 16, "lr": 0.1},
    "privacy": {"epsilon": 2.0, "delta": 1e-5, "clip": 1.0},
    "attacks": {"loss": {"enabled": False}},
    "audit": {"enabled": True, "mode": "one-run", "surface": "iterates", "canary": "random-unit",
              "n_canaries": 1000, "canary_norm": 10.0},
}
EXAMPLE = {
    "name": "mutants-example", "seed": 0,
    "data": {"name": "digits", "clients": 1},
    "model": {"hidden": [64]},
    "train": {"rounds": 4, "cohort": 1, "batch_size": 900, "lr": 2.0},
    "privacy": {"epsilon": 2.0, "delta": 1e-5, "clip": 1.0, "unit": "example"},
    "attacks": {"loss": {"enabled": False}},
    "audit": {"enabled": True, "mode": "one-run", "surface": "iterates", "canary": "dirac",
              "n_canaries": 192, "canary_norm": 10.0},
}
REAL_DP_FEDAVG = aggregation.dp_fedavg
REAL_GAUSSIAN_LIKE = aggregation.gaussian_like
REAL_CLAIM = PrivacyPlan.claim


def audit_verdict(spec: dict, run_dir: Path) -> tuple[str, list[str]]:
    """(FAIL or PASS, the FAIL rows' descriptions) of a one-cell suite's audit."""
    result = run_cell(expand(validate_suite(spec, "test"), "test")[0], run_dir)
    assert result.status == "ok", result.error
    failed = [f"{m.scorer}.{m.metric} ({m.details.get('where', m.value)})"
              for m in result.metrics if m.scorer in ("audit", "audit_forensics")
              and m.metric != "eps_ceiling" and m.details.get("verdict") == "FAIL"]
    return ("FAIL" if failed else "PASS"), failed


# -- client-level DP-FedAvg mutants (the central mechanism reads dp_fedavg) ---------------------

def half_noise(clipped, template, **kw):
    """Noise multiplier 2x too small."""
    return REAL_DP_FEDAVG(clipped, template,
                          **{**kw, "noise_multiplier": kw["noise_multiplier"] / 2})


def reused_noise(clipped, template, **kw):
    """The same noise every round: the generator is re-seeded at each call."""
    return REAL_DP_FEDAVG(clipped, template,
                          **{**kw, "generator": torch.Generator().manual_seed(7)})


def no_noise_on_first_layer(template, std, generator):
    """A leak confined to part of the model: the first layer's weights get no noise."""
    noise = REAL_GAUSSIAN_LIKE(template, std, generator)
    return {n: torch.zeros_like(v) if n == "0.weight" else v for n, v in noise.items()}


def under_reported_rate(self, ledger, rounds_run, clip):
    """Participation accounted wrongly: the Claim's sampling rate is 10x below the real one."""
    honest = REAL_CLAIM(self, ledger, rounds_run, clip)
    return claim_for_poisson_gaussian(
        noise_multiplier=honest.noise_multiplier, sampling_rate=honest.sampling_rate / 10,
        steps=honest.steps, delta=honest.delta, target_epsilon=honest.target_epsilon,
        clip=honest.clip, unit=honest.unit, neighbouring=honest.neighbouring,
        guarantee_against=honest.guarantee_against)


def half_the_steps(self, ledger, rounds_run, clip):
    """Composition accounted wrongly: the Claim composes half the steps that ran."""
    honest = REAL_CLAIM(self, ledger, rounds_run, clip)
    return claim_for_poisson_gaussian(
        noise_multiplier=honest.noise_multiplier, sampling_rate=honest.sampling_rate,
        steps=max(1, honest.steps // 2), delta=honest.delta,
        target_epsilon=honest.target_epsilon, clip=honest.clip, unit=honest.unit,
        neighbouring=honest.neighbouring, guarantee_against=honest.guarantee_against)


# -- example-level DP-SGD mutants (dp_sgd reads gaussian_like from dpsgd) ---------------------

def half_noise_dpsgd(template, std, generator):
    return REAL_GAUSSIAN_LIKE(template, std / 2, generator)


def reused_noise_dpsgd(template, std, generator):
    return REAL_GAUSSIAN_LIKE(template, std, torch.Generator().manual_seed(7))


MUTANTS = {
    "client: noise 2x too small": (CLIENT, [(central, "dp_fedavg", half_noise)]),
    "client: noise reused across rounds": (CLIENT, [(central, "dp_fedavg", reused_noise)]),
    "client: no noise on one tensor": (CLIENT, [(aggregation, "gaussian_like",
                                                 no_noise_on_first_layer)]),
    "client: sampling rate under-reported 10x": (CLIENT, [(PrivacyPlan, "claim",
                                                           under_reported_rate)]),
    "client: half the rounds accounted": (CLIENT, [(PrivacyPlan, "claim", half_the_steps)]),
    "example: noise 2x too small": (EXAMPLE, [(dpsgd, "gaussian_like", half_noise_dpsgd)]),
    "example: noise reused across steps": (EXAMPLE, [(dpsgd, "gaussian_like",
                                                      reused_noise_dpsgd)]),
    "example: half the steps accounted": (EXAMPLE, [(PrivacyPlan, "claim", half_the_steps)]),
}


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_every_mutant_gets_fail(mutant, monkeypatch, tmp_path: Path):
    spec, patches = MUTANTS[mutant]
    for owner, name, replacement in patches:
        monkeypatch.setattr(owner, name, replacement)
    verdict, failed = audit_verdict(spec, tmp_path)
    print(f"\n{mutant}: {verdict} by {', '.join(failed) or 'nothing'}")
    assert verdict == "FAIL"


@pytest.mark.parametrize("spec", [CLIENT, EXAMPLE], ids=["client", "example"])
def test_correct_trainer_passes_in_at_least_19_of_20_seeds(spec, tmp_path: Path):
    outcomes = [audit_verdict({**spec, "seed": seed}, tmp_path / str(seed))
                for seed in range(20)]
    alarms = [(seed, failed) for seed, (v, failed) in enumerate(outcomes) if v == "FAIL"]
    print(f"\n{spec['name']}: false alarms {len(alarms)}/20 {alarms}")
    assert len(alarms) <= 1
