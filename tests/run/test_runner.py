"""The runner: a failing cell is reported and the others still finish; the report escapes text."""

from __future__ import annotations

import math

import pytest
from conftest import TINY_SUITE, write_suite

import privbench.run.cell
from privbench.run.runner import run_suite
from privbench.spec.suite import load_suite


def test_a_failing_cell_is_reported_and_the_others_finish(tmp_path, monkeypatch):
    real = privbench.run.cell.train_fedavg

    def flaky(model, data, shards, train, privacy, seed, **hooks):
        if privacy.epsilon == 8.0:
            raise RuntimeError("simulated trainer crash")
        return real(model, data, shards, train, privacy, seed, **hooks)

    monkeypatch.setattr(privbench.run.cell, "train_fedavg", flaky)
    suite = load_suite(str(write_suite(tmp_path / "tiny.toml", TINY_SUITE)))
    result = run_suite(suite, tmp_path / "run", workers=1)
    status = {c.label: (c.status, c.error) for c in result.cells}
    assert status["epsilon=8"] == ("error", "RuntimeError: simulated trainer crash")
    assert status["epsilon=2"][0] == status["epsilon=inf"][0] == "ok"
    html = (tmp_path / "run" / "index.html").read_text()
    assert "simulated trainer crash" in html and "1 cell(s) failed" in html
    # the failed cell is not stored as finished: a rerun retries it
    monkeypatch.setattr(privbench.run.cell, "train_fedavg", real)
    again = run_suite(suite, tmp_path / "run", workers=1)
    assert [c.status for c in again.cells] == ["ok"] * 3
    assert len(again.loaded) == 2


def test_suite_name_is_escaped_in_the_report(tmp_path):
    text = TINY_SUITE.replace('name = "tiny"', 'name = "<script>alert(1)</script>"')
    text = text.replace('"privacy.epsilon" = [2.0, 8.0, inf]', '"privacy.epsilon" = [inf]')
    suite = load_suite(str(write_suite(tmp_path / "x.toml", text)), ["train.rounds=2"])
    run_suite(suite, tmp_path / "run", workers=1)
    html = (tmp_path / "run" / "index.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize("workers", [1, 2])
def test_results_do_not_depend_on_the_number_of_workers(tmp_path, workers):
    suite = load_suite(str(write_suite(tmp_path / "tiny.toml", TINY_SUITE)), ["train.rounds=4"])
    result = run_suite(suite, tmp_path / f"w{workers}", workers=workers)
    values = [(m.metric, m.value) for c in result.cells for m in c.metrics]
    accuracy = [c.metric("utility", "accuracy").value for c in result.cells]
    assert all(0 <= a <= 1 for a in accuracy) and not any(math.isnan(v) for _, v in values)
    ref = run_suite(suite, tmp_path / f"ref{workers}", workers=1)
    assert values == [(m.metric, m.value) for c in ref.cells for m in c.metrics]
