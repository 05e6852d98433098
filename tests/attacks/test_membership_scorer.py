"""LiRA and RMIA inside a cell: rows in the shared schema, thresholds from shadows, cached
shadow models reused by a cell that differs only in attack settings, and spec errors."""

from __future__ import annotations

import math

import pytest
from conftest import write_suite

import privbench.attacks.membership.shadows as shadow_mod
from privbench.errors import SpecError
from privbench.report.render import write_report
from privbench.run.cell import run_cell
from privbench.spec.suite import load_suite

SMALL = """
name = "mia-small"
seed = 2
[data]
name = "breast_cancer"
clients = 2
[model]
hidden = [8]
[train]
rounds = 3
cohort = 2
local_epochs = 2
batch_size = 16
lr = 0.1
[privacy]
epsilon = inf
[attacks.shadows]
models = 4
[attacks.lira]
enabled = true
[attacks.rmia]
enabled = true
references = 2
"""


def test_cell_reports_lira_rmia_and_shadow_calibrated_thresholds(tmp_path, monkeypatch):
    suite = load_suite(str(write_suite(tmp_path / "s.toml", SMALL)),
                       ["sweep.attacks.rmia.gamma=[1.0, 2.0]"])
    first = run_cell(suite.cells[0], tmp_path / "run")
    assert first.status == "ok", first.error
    rows = {(m.scorer, m.metric): m for m in first.metrics}
    for scorer in ("loss", "lira_online", "lira_offline", "rmia"):
        auc = rows[(scorer, "auc")]
        assert 0 <= auc.ci_low <= auc.value <= auc.ci_high <= 1 and auc.surface == "final_model"
        assert (scorer, "tpr@1e-04") in rows and (scorer, "tpr@0") in rows
        assert (scorer, "ppv@prior=1e-02") in rows and (scorer, "auc[class=1]") in rows
        assert (scorer, "auc[client=1]") in rows
        cal = rows[(scorer, "calibrated_tpr@1e-01")]
        assert cal.details["calibrated_on"] == "shadow model 0 as pseudo-target"
        assert 0 <= cal.details["realised_fpr"] <= 1
        assert len(rows[(scorer, "precision@top10")].details["records"]) == 10
    n = rows[("lira_online", "auc")].details
    assert n["n_members"] + n["n_nonmembers"] == 569 and n["shadow_models"] == 4
    assert all(not math.isnan(m.value) for m in first.metrics)
    assert len(list((tmp_path / "run" / "shadows").glob("*.safetensors"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the second cell must reuse the cached shadows")

    monkeypatch.setattr(shadow_mod, "train_shadows", no_training)
    second = run_cell(suite.cells[1], tmp_path / "run")
    assert second.status == "ok", second.error
    assert second.metric("lira_online", "auc").value == first.metric("lira_online", "auc").value
    html = write_report(tmp_path / "run", suite, [first, second]).read_text()
    start = html.index('<h2 id="membership">Membership inference</h2>')
    section = html[start:html.index("<h2", start + 1)]  # up to the next section
    assert section.count("<svg") == 2  # one log-log ROC per cell
    for text in ("lira_online", "lira_offline", "rmia", "Most vulnerable records", "train["):
        assert text in section


@pytest.mark.parametrize("override, field", [
    ("attacks.rmia.references=5", "attacks.rmia.references"),
    ("attacks.shadows.models=1", "attacks.shadows.models"),
    ("attacks.lira.variance=global", "attacks.lira.variance"),
])
def test_attack_spec_errors_name_the_field(tmp_path, override, field):
    with pytest.raises(SpecError) as err:
        load_suite(str(write_suite(tmp_path / "s.toml", SMALL)), [override])
    assert err.value.problems[0].startswith(field)


def test_example_level_cells_get_lira_and_rmia_with_example_level_shadows(tmp_path, monkeypatch):
    """A DP-SGD (unit example) target is attacked by LiRA and RMIA whose shadows run DP-SGD at
    the target's noise, not refused and not mirrored by client-level shadows."""
    plans = []
    real = shadow_mod.train_shadows

    def spy(model, init, x, y, inclusion, plan):
        plans.append(plan)
        return real(model, init, x, y, inclusion, plan)

    monkeypatch.setattr(shadow_mod, "train_shadows", spy)
    suite = load_suite(str(write_suite(tmp_path / "s.toml", SMALL)),
                       ["privacy.epsilon=4", "privacy.unit=example"])
    result = run_cell(suite.cells[0], tmp_path / "run")
    assert result.status == "ok", result.error
    rows = {(m.scorer, m.metric): m for m in result.metrics}
    assert not [m for m in result.metrics if m.metric == "error"]
    for scorer in ("lira_online", "lira_offline", "rmia"):
        assert 0 <= rows[(scorer, "auc")].value <= 1
    assert plans and plans[0].example_level and plans[0].noise_multiplier > 0
