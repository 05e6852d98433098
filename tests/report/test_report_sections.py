"""Report sections for audit, attacks, inversion, language models and monitoring appear when their
rows exist (synthetic rows here), and per-round monitoring records budget and alarms."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from conftest import TINY_SUITE, write_suite

from privbench.privacy import accounting
from privbench.privacy.budget_monitor import BudgetMonitor, BudgetPlan, read_rounds
from privbench.report.render import write_report
from privbench.run.results import CellResult, MetricRow
from privbench.spec.schema import CellSpec
from privbench.spec.suite import load_suite


def _cells(suite, with_rows: bool) -> list[CellResult]:
    cells = []
    for i, cell in enumerate(suite.cells):
        k = cell.key
        rows = [MetricRow(k, "utility", "accuracy", 0.8 - 0.1 * i, 0.75 - 0.1 * i, 0.85 - 0.1 * i),
                MetricRow(k, "loss", "auc", 0.52, 0.5, 0.54, "final_model"),
                MetricRow(k, "loss", "tpr@1e-03", 0.001, 0.0, 0.01, "final_model")]
        if with_rows:
            rows += [
                MetricRow(k, "audit", "eps_lb", 0.6 + i, 0.4 + i, 0.8 + i, "final_model",
                          {"verdict": "PASS", "alpha": 0.05, "n": 1000, "mode": "one_run"}),
                MetricRow(k, "audit", "eps_ceiling", 5.81, details={"alpha": 0.05}),
                MetricRow(k, "lira_online", "auc", 0.61, 0.58, 0.64, "final_model",
                          {"roc": {"fpr": [0.0, 1e-3, 1e-2, 0.1, 1.0],
                                   "tpr": [0.01, 0.02, 0.05, 0.2, 1.0]}}),
                MetricRow(k, "lira_online", "tpr@1e-03", 0.02, 0.01, 0.03, "final_model"),
                MetricRow(k, "inversion_ig", "psnr", 17.5 + i, surface="client_updates"),
                MetricRow(k, "inversion_ig", "ssim", 0.41, surface="client_updates"),
                MetricRow(k, "canary_exposure", "max_exposure", 9.5 - i, surface="final_model"),
                MetricRow(k, "utility", "perplexity", 31.2 + i),
            ]
        history = [{"round": r, "client_loss": 2.0 / r, "epsilon_spent": 0.1 * r,
                    "epsilon_planned": 0.1 * r} for r in range(1, 6)]
        if with_rows and i == 0:
            history[3]["alarm"] = "spent ε 0.5 runs ahead of the plan's 0.4 after round 4"
        eps = cell.spec.privacy.epsilon
        claim = {"epsilon": eps, "delta": 1e-5, "epsilon_rdp": eps, "target_epsilon": eps,
                 "unit": "client", "neighbouring": "add_or_remove_one", "accountant": "pld",
                 "sampling": "poisson", "noise_multiplier": 1.0, "sampling_rate": 0.2,
                 "steps": 5, "clip": 1.0, "guarantee_against": ["anyone"],
                 "dp_event": {"type": "SelfComposedDpEvent"}}
        spec = cell.spec.model_dump()
        if with_rows:  # language-model rows come from language-model cells
            spec["task"] = "causal_lm"
        cells.append(CellResult(key=k, label=cell.label, axes=cell.axes, status="ok",
                                spec=spec, claim=claim, metrics=rows, history=history))
    return cells


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    path = write_suite(tmp_path_factory.mktemp("suite") / "tiny.toml", TINY_SUITE)
    return load_suite(str(path))


def test_sections_render_only_when_their_rows_exist(tiny_suite, tmp_path):
    bare = write_report(tmp_path, tiny_suite, _cells(tiny_suite, False)).read_text()
    for section in ('id="audit"', 'id="inversion"', 'id="language"', "Budget alarm"):
        assert section not in bare
    assert 'id="verdict-word">NO POLICY<' in bare and 'id="membership"' in bare
    full = write_report(tmp_path, tiny_suite, _cells(tiny_suite, True)).read_text()
    for section in ('id="audit"', 'id="inversion"', 'id="language"', 'id="membership"',
                    'id="rounds"', 'id="cards"', "Budget alarm: 1 round(s)"):
        assert section in full, section
    assert "lira_online" in full and "tightness" in full
    assert full.count("<svg") >= 4  # frontier, audit, ROC, rounds
    assert "no attack can certify" in full
    # the first screen: verdict banner, then claimed vs measured epsilon, then the scorecard
    assert full.index('id="verdict"') < full.index('id="audit"') < full.index('id="scorecard"')


def test_exposed_surfaces_come_from_observations_json(tiny_suite, tmp_path):
    cells = _cells(tiny_suite, False)
    folder = tmp_path / "cells" / cells[0].key
    folder.mkdir(parents=True)
    (folder / "observations.json").write_text(json.dumps(
        {"exposed": {"client_updates": "the <b>server</b>"}}))
    html = write_report(tmp_path, tiny_suite, cells).read_text()
    assert 'id="surfaces"' in html and "exposed to the &lt;b&gt;server&lt;/b&gt;" in html


def test_budget_plan_reaches_the_target_and_an_overspend_raises_an_alarm(tmp_path):
    spec = CellSpec.model_validate({"data": {"clients": 40}, "train": {"rounds": 8, "cohort": 8},
                                    "privacy": {"epsilon": 2.0}})
    plan = BudgetPlan(spec)
    eps = [plan.epsilon_after(r) for r in range(1, 9)]
    assert all(a < b for a, b in itertools.pairwise(eps))
    assert eps[-1] == pytest.approx(2.0, rel=0.01)  # the calibrated plan meets the target
    monitor = BudgetMonitor(tmp_path / "rounds.jsonl", spec)
    for r in range(1, 4):  # rounds that execute the planned mechanism
        monitor({"round": r, "client_loss": 1.0}, plan._round_event)
    z = plan._round_event.event.event.noise_multiplier
    overspend = accounting.poisson_gaussian_event(z / 2, 8 / 40, 1)  # half the planned noise ran
    monitor({"round": 4}, overspend)
    rows = read_rounds(tmp_path / "rounds.jsonl")
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    assert "alarm" not in rows[2] and rows[2]["epsilon_spent"] == pytest.approx(eps[2], rel=1e-6)
    assert "runs ahead of the plan" in rows[3]["alarm"] and len(monitor.alarms) == 1
    no_dp = BudgetMonitor(tmp_path / "nodp.jsonl", spec.model_copy(
        update={"privacy": spec.privacy.model_copy(update={"epsilon": math.inf})}))
    no_dp({"round": 1}, None)
    assert read_rounds(tmp_path / "nodp.jsonl") == [{"round": 1}]


def test_a_run_writes_rounds_as_they_happen_with_the_budget(quick_run, quick_results):
    out, _ = quick_run
    private = [c for c in quick_results["cells"] if c["claim"]["epsilon"] != "inf"]
    for cell in private:
        rows = read_rounds(out / "cells" / cell["key"] / "rounds.jsonl")
        assert len(rows) == cell["spec"]["train"]["rounds"]
        assert rows[-1]["epsilon_spent"] == pytest.approx(cell["claim"]["epsilon"], rel=0.01)
        assert not any("alarm" in r for r in rows)
        assert cell["history"][-1]["epsilon_spent"] == rows[-1]["epsilon_spent"]
    assert 'id="rounds"' in (out / "index.html").read_text()


def test_an_audited_runs_budget_follows_the_plan_it_runs(quick_results):
    """The quick suite's private cells plant canary clients, whose expected cohort keeps the
    real clients' rate for the m / 2 canaries expected, so the run's round is its own sampled
    Gaussian (the realised canary count sets its rate). The monitor plans that run, not the
    spec's unaudited one: every round's spent epsilon is the plan's, read from it (never
    composed round by round off the plan)."""
    private = [c for c in quick_results["cells"] if c["claim"]["epsilon"] != "inf"]
    assert private and all(c["spec"]["audit"]["enabled"] for c in private)
    for cell in private:
        rows = [h for h in cell["history"] if "epsilon_planned" in h]
        assert len(rows) == cell["spec"]["train"]["rounds"]
        assert all(r["epsilon_spent"] == r["epsilon_planned"] for r in rows)
        assert rows[-1]["epsilon_spent"] == pytest.approx(cell["claim"]["epsilon"], rel=1e-3)


def test_audit_section_shows_power_beside_the_verdict_and_forensic_rows(tiny_suite, tmp_path):
    cells = _cells(tiny_suite, True)
    k = cells[0].key
    cells[0].metrics[3] = MetricRow(
        k, "audit", "eps_lb", 2.4, 2.4, None, "iterates",
        {"verdict": "FAIL", "alpha": 0.05, "n": 1000, "mode": "one-run",
         "method": "one-run gauss-sum", "eps_caught": 3.1, "power_at_claim_x2": 0.97})
    cells[0].metrics += [
        MetricRow(k, "audit_forensics", "noise_scale", 1e-9, surface="iterates",
                  details={"verdict": "FAIL", "false_alarm_rate": 0.01,
                           "where": "tensor 0.weight, round 3", "note": "lower tail"}),
        MetricRow(k, "audit_forensics", "participation", 0.4, surface="iterates",
                  details={"verdict": "PASS", "false_alarm_rate": 0.01, "where": "10 rounds",
                           "note": "Binomial"})]
    html = write_report(tmp_path, tiny_suite, cells).read_text()
    assert "this audit would have caught ε ≥ 3.1" in html
    assert 'id="noise-forensics"' in html and "tensor 0.weight, round 3" in html
    assert html.count('class="err">FAIL<') >= 2  # the eps_LB verdict and the forensic row
