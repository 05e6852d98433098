"""Audit plumbing: the [audit] spec, verdicts and their rows, canaries, and the scorer in a cell."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from privbench.audit.canaries import CanaryUpdateHook, plant_audit_canaries
from privbench.audit.estimators import EpsilonBound
from privbench.audit.one_run_bound import fl_one_shot_bound, one_run_bound
from privbench.audit.verdict import audit_rows, verdict
from privbench.data.partition import partition
from privbench.data.splits import load_split
from privbench.errors import SpecError
from privbench.run.cell import run_cell
from privbench.run.cell_paths import cell_dir
from privbench.spec.attack_schema import AuditSpec
from privbench.spec.load import validate_suite
from privbench.spec.schema import CellSpec, DataSpec
from privbench.spec.suite import expand

SMALL = {
    "name": "audit", "seed": 1,
    "data": {"name": "digits", "clients": 20},
    "model": {"hidden": [16]},
    "train": {"rounds": 4, "cohort": 10, "batch_size": 8},
    "privacy": {"epsilon": 2.0, "delta": 1e-5},
    "attacks": {"loss": {"enabled": False}},
}


def with_audit(**audit) -> dict:
    return {**SMALL, "audit": {"enabled": True, **audit}}


@pytest.mark.parametrize("audit, field, hint", [
    ({"mode": "multi-run"}, "audit.mode = 'multi-run'", "support 'one-run'"),
    ({"canary": "dirac", "surface": "iterates"}, "audit.canary = 'dirac'",
     "privacy.unit = 'example'"),
    ({"surface": "aggregates", "canary": "random-unit"}, "audit.surface = 'aggregates'",
     "final_model, final_weights, iterates"),
    ({"surface": "final_weights"}, "audit.canary = 'mislabelled'", "'random-unit'"),
    ({"surface": "iterates", "canary": "random-unit", "mode": "fl-one-shot"},
     "audit.mode = 'fl-one-shot'", "'one-run'"),
    ({"n_canaries": 5000}, "audit.n_canaries = 5000", "canary = 'ood'"),
    ({"alpha": 0.7}, "audit.alpha = 0.7", "less than 0.5"),
    ({"mode": "two-run"}, "audit.mode = 'two-run'", "'one-run', 'multi-run' or 'fl-one-shot'"),
])
def test_bad_audit_table_is_one_line_naming_the_field(audit, field, hint):
    with pytest.raises(SpecError) as err:
        validate_suite(with_audit(**audit), "s.toml")
    assert len(err.value.lines()) == 1, err.value.lines()
    line = err.value.lines()[0]
    assert line.startswith(f"s.toml: {field}"), line
    assert hint in line, line


def test_multi_run_dirac_audit_needs_one_client_training_every_round():
    spec = {**with_audit(canary="dirac", surface="iterates", mode="multi-run"),
            "privacy": {"epsilon": 2.0, "unit": "example"}}
    with pytest.raises(SpecError) as err:
        validate_suite(spec, "s.toml")
    assert err.value.lines() == ["s.toml: audit.mode = 'multi-run': its Dirac runs are "
                                 "centralised DP-SGD, one client training every round; set "
                                 "data.clients = 1, train.cohort = 1 and train.dropout = 0, or "
                                 "audit.mode = 'one-run'"]
    one_run = {**spec, "audit": {**spec["audit"], "mode": "one-run"}}
    assert validate_suite(one_run, "s.toml").audit.canary == "dirac"  # records of random clients


def test_disabled_audit_is_not_checked():
    spec = validate_suite({**SMALL, "audit": {"mode": "multi-run"}}, "s.toml")
    assert not spec.audit.enabled


def bound(eps_lb: float, ceiling: float) -> EpsilonBound:
    return EpsilonBound("one-run", eps_lb, ceiling, 0.05, 100, 1e-5, {"k_plus": 3})


@pytest.mark.parametrize("eps_lb, ceiling, claimed, want", [
    (2.5, 3.5, 2.0, "FAIL"), (1.0, 3.5, 2.0, "PASS"), (1.0, 3.5, 4.0, "TOO_SMALL"),
    (0.0, 3.5, 3.5, "TOO_SMALL"), (1.0, 3.5, math.inf, "TOO_SMALL"),
])
def test_verdict(eps_lb, ceiling, claimed, want):
    assert verdict(eps_lb, ceiling, claimed) == want


def test_audit_rows_carry_the_conventions():
    lb, ceil = audit_rows("key", bound(1.0, 3.5), 4.0, "iterates", "one-run")
    assert (lb.scorer, lb.metric, lb.value, lb.ci_low, lb.surface) == (
        "audit", "eps_lb", 1.0, 1.0, "iterates")
    for key in ("verdict", "alpha", "n", "mode", "claimed_epsilon"):
        assert key in lb.details and key in ceil.details
    assert lb.details["verdict"] == "TOO_SMALL" and "too small to test" in lb.details["note"]
    assert lb.details["tightness"] == pytest.approx(0.25)
    assert (ceil.metric, ceil.value) == ("eps_ceiling", 3.5)


def test_one_run_split_never_reads_certification_bits_when_choosing():
    """Flipping the bits of the certification half leaves the chosen (k+, k-) unchanged."""
    rng = np.random.default_rng(0)
    bits = rng.random(200) < 0.5
    scores = bits + rng.normal(0, 0.7, 200)
    a = one_run_bound(scores, bits, delta=1e-5, rng=np.random.default_rng(5))
    cert = np.random.default_rng(5)
    cert.random(200)  # the tie-break draw
    half = cert.permutation(200)[100:]
    flipped = bits.copy()
    flipped[half] = ~flipped[half]
    b = one_run_bound(scores, flipped, delta=1e-5, rng=np.random.default_rng(5))
    assert (a.details["k_plus"], a.details["k_minus"]) == (b.details["k_plus"],
                                                           b.details["k_minus"])
    assert a.eps_lb > 0 and b.eps_lb == 0.0


def test_fl_one_shot_is_zero_on_unseen_canaries():
    rng = np.random.default_rng(1)
    d = 1000
    b = fl_one_shot_bound(rng.normal(0, 1 / math.sqrt(d), 60), d, delta=1e-5)
    assert b.eps_lb == 0.0 and math.isinf(b.ceiling)


def test_input_canaries_are_their_own_clients():
    data = load_split(DataSpec(), 0)
    shards = partition(DataSpec(), data.y_train, 0)
    cell = CellSpec(audit=AuditSpec(enabled=True, n_canaries=40))
    run = plant_audit_canaries(cell, data, shards, torch.nn.Linear(4, 2))
    c = run.canaries
    included = np.flatnonzero(c.bits)
    assert len(run.shards) == len(shards) + len(included)
    # The expected cohort grows with the 20 canary clients expected: real clients keep their
    # sampling rate, and the claim its value.
    assert run.train.cohort / (len(shards) + 20) == pytest.approx(cell.train.cohort / len(shards))
    assert len(run.data.y_train) == len(data.y_train) + len(included)
    for j, shard in zip(included, run.shards[len(shards):], strict=True):
        assert shard.id == c.client_ids[j] and len(shard.indices) == 1
        np.testing.assert_array_equal(run.data.x_train[shard.indices[0]], c.x[j])
    assert np.all(c.client_ids[~c.bits] == -1)
    # Mislabelled: never the population record's own label.
    pop_labels = {tuple(x): y for x, y in zip(data.x_pop.tolist(), data.y_pop, strict=True)}
    assert all(pop_labels[tuple(x)] != y for x, y in zip(c.x.tolist(), c.y, strict=True))


def test_update_hook_replaces_only_sampled_canary_clients():
    data = load_split(DataSpec(), 0)
    shards = partition(DataSpec(), data.y_train, 0)
    audit = AuditSpec(enabled=True, canary="random-unit", surface="final_weights", n_canaries=10,
                      canary_norm=3.0)
    cell = CellSpec(audit=audit, privacy={"clip": 0.5})
    run = plant_audit_canaries(cell, data, shards, torch.nn.Linear(2, 2))  # 6 parameters
    hook = run.client_update_hook
    assert isinstance(hook, CanaryUpdateHook)
    j = int(np.flatnonzero(run.canaries.bits)[0])
    sampled = torch.tensor([0, int(run.canaries.client_ids[j])])
    updates = {"w": torch.ones(2, 2, 2), "b": torch.ones(2, 2)}
    before = {name: u.clone() for name, u in updates.items()}
    out = hook(0, sampled, updates)  # in place: the trainer hands it the round's own tensors
    assert torch.equal(out["w"][0], before["w"][0]) and torch.equal(out["b"][0], before["b"][0])
    flat = torch.cat([out["w"][1].flatten(), out["b"][1].flatten()]).double().numpy()
    np.testing.assert_allclose(flat, run.canaries.vectors[j] * 1.5, rtol=1e-6)
    assert hook.canary_mask(sampled).tolist() == [False, True]
    excluded = len(shards) + int(run.canaries.bits.sum())  # not a canary client: past the last
    assert hook.canary_mask(torch.tensor([excluded, 1])).tolist() == [False, False]


def test_canary_clients_are_not_trained(monkeypatch, tmp_path: Path):
    """Local SGD runs only on sampled clients that are not canaries; the run stays deterministic."""
    import privbench.trainers.mechanisms.base as clients  # where the mechanisms train

    trained, masked = [], []
    real_sgd, real_mask = clients.local_sgd, CanaryUpdateHook.canary_mask

    def counting_sgd(adapter, params, data, *args, **kwargs):
        trained.append(data.n_clients)
        return real_sgd(adapter, params, data, *args, **kwargs)

    def counting_mask(self, sampled):
        mask = real_mask(self, sampled)
        masked.append(int(mask.sum()))
        return mask

    monkeypatch.setattr(clients, "local_sgd", counting_sgd)
    monkeypatch.setattr(CanaryUpdateHook, "canary_mask", counting_mask)
    spec = with_audit(canary="random-unit", surface="iterates", n_canaries=20)
    cell = expand(validate_suite(spec, "t"), "t")[0]
    first = run_cell(cell, tmp_path / "a")
    assert first.status == "ok", first.error
    cohorts = sum(h["cohort"] for h in first.history if "cohort" in h)
    assert sum(masked) > 0 and sum(trained) + sum(masked) == cohorts
    second = run_cell(cell, tmp_path / "b")
    assert second.metric("audit", "eps_lb").value == first.metric("audit", "eps_lb").value
    weights = [load_file(str(cell_dir(tmp_path / run, cell.key) / "weights.safetensors"))
               for run in ("a", "b")]
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])


@pytest.mark.parametrize("audit", [
    {"canary": "ood", "n_canaries": 40},
    {"canary": "random-unit", "surface": "final_weights", "mode": "fl-one-shot",
     "n_canaries": 40},
])
def test_audit_scorer_in_a_cell(audit, tmp_path: Path):
    cell = expand(validate_suite(with_audit(**audit), "t"), "t")[0]
    result = run_cell(cell, tmp_path)
    assert result.status == "ok", result.error
    lb, ceil = result.metric("audit", "eps_lb"), result.metric("audit", "eps_ceiling")
    assert lb is not None and ceil is not None
    assert lb.details["mode"] == audit.get("mode", "one-run")
    assert lb.details["claimed_epsilon"] == pytest.approx(result.claim["epsilon"])
    assert lb.details["verdict"] in ("PASS", "TOO_SMALL")  # a correct trainer is never refuted
    assert lb.value <= ceil.value


def test_no_audit_rows_when_disabled(tmp_path: Path):
    cell = expand(validate_suite(SMALL, "t"), "t")[0]
    result = run_cell(cell, tmp_path)
    assert result.status == "ok" and result.metric("audit", "eps_lb") is None
