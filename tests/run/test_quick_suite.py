"""The built-in quick suite end to end through the CLI, and its claims against dp_accounting."""

from __future__ import annotations

import json
import math
import re
import sqlite3

import dp_accounting
import pytest
from dp_accounting import pld, rdp

from privbench.audit.canaries import audited_cohort


def _metric(cell: dict, scorer: str, metric: str) -> float:
    return next(m["value"] for m in cell["metrics"]
                if m["scorer"] == scorer and m["metric"] == metric)


def test_quick_suite_reports_rows_for_epsilon_1_8_inf_and_accuracy_rises(quick_run, quick_results):
    out, proc = quick_run
    cells = quick_results["cells"]
    assert [c["status"] for c in cells] == ["ok"] * 3
    claimed = [c["claim"]["epsilon"] for c in cells]
    assert claimed[0] == pytest.approx(1.0, rel=1e-3) and claimed[0] <= 1.0
    assert claimed[1] == pytest.approx(8.0, rel=1e-3) and claimed[1] <= 8.0
    assert claimed[2] == "inf"
    accuracy = [_metric(c, "utility", "accuracy") for c in cells]
    assert accuracy[0] < accuracy[1] < accuracy[2], accuracy
    html = (out / "index.html").read_text()
    for label in ("epsilon=1", "epsilon=8", "epsilon=inf"):
        assert f"<td>{label}</td>" in html
    assert "<svg" in html  # the frontier plot is inline
    assert str(out / "index.html") in proc.stdout


def test_report_loads_nothing_from_the_network(quick_run):
    out, _ = quick_run
    html = (out / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html)
    assert "@import" not in html


def test_results_sqlite_has_one_row_per_metric(quick_run, quick_results):
    out, _ = quick_run
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute("SELECT experiment, scorer, metric, value, ci_low, ci_high, surface "
                       "FROM metrics").fetchall()
    n_json = sum(len(c["metrics"]) for c in quick_results["cells"])
    assert len(rows) == n_json
    assert {"utility", "loss", "privacy"} <= {r[1] for r in rows}
    auc = [r for r in rows if r[1] == "loss" and r[2] == "auc"]
    assert len(auc) == 3 and all(r[4] <= r[3] <= r[5] and r[6] == "final_model" for r in auc)
    json.loads((out / "results.json").read_text(), parse_constant=_reject)  # strict JSON


def _reject(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def test_claimed_epsilon_matches_an_independent_dp_accounting_computation(quick_results):
    """Recompute each cell's epsilon from the recorded z, q and rounds; PLD within 1e-6, <= RDP."""
    private = [c for c in quick_results["cells"] if c["claim"]["epsilon"] != "inf"]
    assert len(private) == 2
    for cell in private:
        claim = cell["claim"]
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(
                claim["sampling_rate"], dp_accounting.GaussianDpEvent(claim["noise_multiplier"])),
            claim["steps"])
        spec = cell["spec"]
        # the run that executed: the quick suite audits every cell with canary clients, each its
        # own client; the expected cohort grows with the canaries expected (audited_cohort)
        train, clients = spec["train"], spec["data"]["clients"]
        audit = next(m for m in cell["metrics"]
                     if m["scorer"] == "audit" and m["metric"] == "eps_lb")
        included = audit["details"]["included"]
        ran = audited_cohort(train["cohort"], clients, spec["audit"]["n_canaries"]) / (
            clients + included)
        assert claim["sampling_rate"] == ran
        assert claim["steps"] == spec["train"]["rounds"]
        eps_pld = pld.PLDAccountant().compose(event).get_epsilon(claim["delta"])
        eps_rdp = rdp.RdpAccountant().compose(event).get_epsilon(claim["delta"])
        assert math.isclose(claim["epsilon"], eps_pld, rel_tol=1e-6)
        assert claim["epsilon"] <= eps_rdp
        assert math.isclose(claim["epsilon_rdp"], eps_rdp, rel_tol=1e-6)
        assert claim["epsilon"] <= spec["privacy"]["epsilon"]
