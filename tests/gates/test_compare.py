"""`privbench compare`: metric changes between runs, with regressions flagged."""

from __future__ import annotations

import json

from conftest import run_cli
from report_helpers import copy_run

from privbench.gates.compare import compare_cells
from privbench.gates.evaluate import load_cells
from privbench.run.results import MetricRow


def test_a_run_compared_with_itself_has_no_regression(quick_run):
    proc = run_cli("compare", str(quick_run[0]), str(quick_run[0]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 regression(s)" in proc.stdout


def test_worse_utility_and_stronger_attacks_are_flagged_beyond_their_intervals(quick_run,
                                                                               tmp_path):
    cells_a = load_cells(quick_run[0])
    cells_b = [type(c).from_dict(c.to_dict()) for c in cells_a]
    cell = cells_b[1]
    acc = cell.metric("utility", "accuracy")
    auc = cell.metric("loss", "auc")
    i_acc, i_auc = cell.metrics.index(acc), cell.metrics.index(auc)
    cell.metrics[i_acc] = MetricRow(acc.experiment, "utility", "accuracy", acc.value - 0.2,
                                    acc.ci_low - 0.2, acc.ci_high - 0.2)
    # a small AUC rise inside its own interval is noise, not a regression
    cell.metrics[i_auc] = MetricRow(auc.experiment, "loss", "auc", auc.value + 0.001,
                                    auc.ci_low + 0.001, auc.ci_high + 0.001, auc.surface)
    flagged = [(c.cell, c.metric) for c in compare_cells(cells_a, cells_b) if c.regression]
    assert flagged == [(cell.label, "accuracy")]
    run_b = copy_run(quick_run[0], tmp_path / "b")
    doc = json.loads((run_b / "results.json").read_text())
    doc["cells"][1] = cell.to_dict()
    (run_b / "results.json").write_text(json.dumps(doc))
    proc = run_cli("compare", str(quick_run[0]), str(run_b))
    assert proc.returncode == 1
    assert "REGRESSION" in proc.stdout and "1 regression(s)" in proc.stdout


def test_an_epsilon_change_within_the_accountants_precision_is_not_a_regression(quick_run):
    cells_a = load_cells(quick_run[0])
    private = next(c for c in cells_a if c.metric("privacy", "epsilon").value < float("inf"))
    eps = private.metric("privacy", "epsilon")
    assert eps.details["precision"] == 1e-4  # the PLD grid of the claim
    flagged = {}
    for change in (1.8e-6, 1e-2):
        cell = type(private).from_dict(private.to_dict())
        i = cell.metrics.index(cell.metric("privacy", "epsilon"))
        cell.metrics[i] = MetricRow(eps.experiment, "privacy", "epsilon", eps.value + change,
                                    details=eps.details)
        flagged[change] = [c.metric for c in compare_cells([private], [cell]) if c.regression]
    assert flagged == {1.8e-6: [], 1e-2: ["epsilon"]}
