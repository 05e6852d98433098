"""Gates: a policy refuses a spec before training and passes or fails a finished run."""

from __future__ import annotations

import json
import math

import pytest
from conftest import run_cli
from report_helpers import FAIL_POLICY, PASS_POLICY, copy_run, write_policy

from privbench.errors import SpecError
from privbench.gates.evaluate import evaluate
from privbench.gates.policy import load_policy
from privbench.run.results import CellResult, MetricRow


def test_gate_cli_passes_a_run_that_meets_the_policy(quick_run, tmp_path):
    run = copy_run(quick_run[0], tmp_path / "run")
    policy = write_policy(tmp_path / "pass.toml", PASS_POLICY)
    proc = run_cli("gate", "--policy", str(policy), str(run))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verdict: PASS" in proc.stdout
    for gate in ("max_epsilon", "delta_at_most_one_over_n", "max_tpr_at_fpr_1e-3", "min_utility"):
        assert gate in proc.stdout
    gates = json.loads((run / "gates.json").read_text())
    assert gates["verdict"] == "PASS"
    assert {r["status"] for r in gates["results"]} == {"pass", "exempt"}
    assert 'id="verdict-word">PASS<' in (run / "index.html").read_text()


def test_gate_cli_fails_naming_the_gate_and_the_margin(quick_run, quick_results, tmp_path):
    run = copy_run(quick_run[0], tmp_path / "run")
    policy = write_policy(tmp_path / "fail.toml", FAIL_POLICY)
    proc = run_cli("gate", "--policy", str(policy), str(run))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    eps8 = next(c["claim"]["epsilon"] for c in quick_results["cells"] if c["label"] == "epsilon=8")
    margin = f"{4.0 - eps8:.4g}"
    assert f"FAIL max_epsilon [epsilon=8]: FAIL measured {eps8:.4g}, threshold ≤ 4" in proc.stdout
    assert f"margin {margin}" in proc.stdout
    assert 7.999 <= eps8 <= 8.0 and margin == "-4"  # the claim meets its target within 1e-3
    assert "verdict: FAIL" in proc.stdout
    gates = json.loads((run / "gates.json").read_text())
    failed = [r for r in gates["results"] if r["status"] == "fail"]
    assert [(r["gate"], r["cell"]) for r in failed] == [("max_epsilon", "epsilon=8")]
    assert failed[0]["margin"] == pytest.approx(4.0 - eps8)
    assert 'id="verdict-word">FAIL<' in (run / "index.html").read_text()


def test_a_spec_that_breaks_the_policy_is_refused_before_training(tmp_path):
    policy = write_policy(tmp_path / "fail.toml", FAIL_POLICY.replace(
        "allow_no_dp_baseline = true", "allow_no_dp_baseline = false"))
    out = tmp_path / "never"
    proc = run_cli("suite", "quick", "--policy", str(policy), "--out", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert "cell epsilon=8: privacy.epsilon = 8 is above privacy.max_epsilon = 4" in lines[0]
    assert "gate max_epsilon, margin -4" in lines[0]
    assert "cell epsilon=inf" in lines[1] and "allow_no_dp_baseline" in lines[1]
    assert not out.exists()


def test_policy_errors_are_one_line_naming_the_field(tmp_path):
    bad = write_policy(tmp_path / "bad.toml", "[privacy]\nmax_epsilon = -1\nmax_eps = 2\n")
    with pytest.raises(SpecError) as e:
        load_policy(bad)
    assert e.value.lines() == [
        f"{bad}: privacy.max_epsilon = -1: must be greater than 0",
        f"{bad}: privacy.max_eps: unknown key; allowed keys: max_epsilon, "
        "delta_at_most_one_over_n"]


def _cell(label: str, eps: float, rows: list[MetricRow]) -> CellResult:
    spec = {"seed": 0, "data": {"name": "digits", "clients": 100},
            "privacy": {"epsilon": eps, "delta": 1e-5}}
    claim = {"epsilon": eps, "delta": 1e-5, "unit": "client"}
    return CellResult(key="0" * 16, label=label, axes={}, status="ok", spec=spec, claim=claim,
                      metrics=rows)


def test_eps_lb_gate_fails_above_the_claim_and_warns_on_low_confidence_or_no_audit(tmp_path):
    text = "[audit]\neps_lb_not_above_claim = true\nconfidence = 0.95\n"
    policy = load_policy(write_policy(tmp_path / "p.toml", text))
    k = "0" * 16
    refuted = _cell("refuted", 1.0, [MetricRow(k, "audit", "eps_lb", 1.7, 1.2, 2.1, None,
                                               {"alpha": 0.05, "verdict": "FAIL"})])
    weak = _cell("weak", 4.0, [MetricRow(k, "audit", "eps_lb", 0.5, details={"alpha": 0.2})])
    none = _cell("none", 4.0, [])
    report = evaluate([refuted, weak, none], policy)
    status = {r.cell: (r.status, r.margin) for r in report.results}
    assert status["refuted"][0] == "fail" and status["refuted"][1] == pytest.approx(-0.7)
    assert status["weak"][0] == "warn" and status["none"] == ("no data", None)
    assert report.verdict == "FAIL"
    assert evaluate([weak, none], policy).verdict == "WARN"
    assert "80% confidence" in next(r.note for r in report.results if r.cell == "weak")


def test_utility_drop_against_a_baseline_run(quick_run, tmp_path):
    policy = load_policy(write_policy(tmp_path / "p.toml", (
        f'allow_no_dp_baseline = true\n[utility]\nmax_drop = 0.0\nbaseline = "{quick_run[0]}"\n'
    )))
    from privbench.gates.evaluate import load_cells

    cells = load_cells(quick_run[0])
    assert evaluate(cells, policy).verdict == "PASS"  # a run against itself drops nothing
    worse = [CellResult.from_dict(c.to_dict()) for c in cells]
    acc = worse[0].metric("utility", "accuracy")
    worse[0].metrics[worse[0].metrics.index(acc)] = MetricRow(
        acc.experiment, acc.scorer, acc.metric, acc.value - 0.1, surface=acc.surface)
    report = evaluate(worse, policy)
    bad = report.failures
    assert [(r.gate, r.cell) for r in bad] == [("max_utility_drop", worse[0].label)]
    assert math.isclose(bad[0].margin, -0.1, abs_tol=1e-9)


def test_eps_lb_gate_warns_that_a_too_small_audit_could_not_test_the_claim(tmp_path):
    text = "[audit]\neps_lb_not_above_claim = true\nconfidence = 0.95\n"
    policy = load_policy(write_policy(tmp_path / "p.toml", text))
    k = "0" * 16
    small = _cell("small", 8.0, [
        MetricRow(k, "audit", "eps_lb", 1.1, details={"alpha": 0.05, "verdict": "TOO_SMALL"}),
        MetricRow(k, "audit", "eps_ceiling", 3.49)])
    tested = _cell("tested", 2.0, [
        MetricRow(k, "audit", "eps_lb", 1.1, details={"alpha": 0.05, "verdict": "PASS"})])
    report = evaluate([small, tested], policy)
    result = {r.cell: r for r in report.results}
    assert result["small"].status == "warn" and result["tested"].status == "pass"
    assert "could not test the claim" in result["small"].note and "3.49" in result["small"].note
    assert report.verdict == "WARN"
