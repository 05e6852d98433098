"""Resource accounting: each cell's peak resident memory and wall time land in results.json,
results.sqlite and the report's provenance; a cell above `max_memory_gb` is refused up front."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import TINY_SUITE, run_cli, write_suite

from privbench.errors import PrivbenchError
from privbench.run.manifest import check_run
from privbench.run.results_schema import validate_results
from privbench.run.runner import run_suite
from privbench.spec.limits import check_memory, memory_parts
from privbench.spec.suite import load_suite


def test_peak_memory_and_wall_time_are_recorded_per_cell(tmp_path):
    suite = load_suite(str(write_suite(tmp_path / "t.toml", TINY_SUITE)),
                       ["train.rounds=2", "privacy.epsilon=inf"])
    result = run_suite(suite, tmp_path / "run", workers=1)
    (cell,) = result.cells
    assert cell.status == "ok" and cell.seconds > 0
    assert 50 < cell.peak_rss_mb < 1e5  # a torch process: tens of MB at least, in MB not KB
    document = json.loads((tmp_path / "run" / "results.json").read_text())
    validate_results(document)
    assert document["cells"][0]["peak_rss_mb"] == cell.peak_rss_mb
    stored = json.loads((tmp_path / "run" / "cells" / cell.key / "result.json").read_text())
    assert stored["peak_rss_mb"] == cell.peak_rss_mb
    with sqlite3.connect(tmp_path / "run" / "results.sqlite") as con:
        rss, seconds = con.execute("SELECT peak_rss_mb, seconds FROM cells").fetchone()
    assert (rss, seconds) == (cell.peak_rss_mb, cell.seconds)
    html = (tmp_path / "run" / "index.html").read_text()
    assert f"{cell.peak_rss_mb:.0f} MB" in html and f"{cell.seconds:.1f} s" in html
    assert check_run(tmp_path / "run").ok  # the rewritten result.json is in the manifest
    again = run_suite(suite, tmp_path / "run", workers=1)
    assert again.loaded == [cell.key] and again.cells[0].peak_rss_mb == cell.peak_rss_mb


def test_a_cell_above_max_memory_gb_is_refused_in_one_line():
    cell = load_suite("quick").cells[0]
    need = sum(p.bytes for p in memory_parts(cell.spec))
    check_memory([cell], workers=1, available=1e12, max_bytes=need * 1.01)  # fits
    with pytest.raises(PrivbenchError) as err:
        check_memory([cell], workers=1, available=1e12, max_bytes=need / 2)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"max_memory_gb = {need / 2e9:g}: cell ")
    assert "raise max_memory_gb (--max-memory-gb)" in line and "lower train." in line


@pytest.mark.parametrize("how", ["--max-memory-gb", "spec"])
def test_max_memory_gb_refuses_before_anything_runs(tmp_path, how):
    suite = write_suite(tmp_path / "t.toml", ("max_memory_gb = 0.0001\n" if how == "spec"
                                              else "") + TINY_SUITE)
    extra = ["--max-memory-gb", "0.0001"] if how != "spec" else []
    out = tmp_path / "run"
    proc = run_cli("suite", str(suite), "--out", str(out), *extra)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("max_memory_gb = 0.0001: cell "), proc.stderr
    assert not (out / "cells").exists()
