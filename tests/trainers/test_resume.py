"""A suite killed mid-run resumes: finished cells load, results equal an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from conftest import TINY_SUITE, run_cli, write_suite


def _results(run_dir):
    data = json.loads((run_dir / "results.json").read_text())
    return [(c["key"], c["claim"], [(m["scorer"], m["metric"], m["value"], m["ci_low"],
                                      m["ci_high"]) for m in c["metrics"]]) for c in data["cells"]]


def test_killed_suite_resumes_without_retraining(tmp_path):
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE.replace("rounds = 12", "rounds = 40"))
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "privbench", "suite", str(suite), "--out",
                             str(interrupted), "--workers", "1", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells = interrupted / "cells"
    deadline = time.time() + 120

    def finished_cells() -> list[str]:  # not the hidden folders a cell is written in first
        return sorted(p.parent.name for p in cells.glob("*/result.json")
                      if not p.parent.name.startswith("."))

    while time.time() < deadline and proc.poll() is None:
        if cells.exists() and finished_cells():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = finished_cells()
    assert 1 <= len(finished) < 3, "the kill must land mid-run for this test to mean anything"
    stamps = {k: (cells / k / "weights.safetensors").stat().st_mtime_ns for k in finished}

    resumed = run_cli("suite", str(suite), "--out", str(interrupted), "--workers", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(finished)} cells loaded, {3 - len(finished)} run" in resumed.stdout
    for key, stamp in stamps.items():  # finished cells were not retrained
        assert (cells / key / "weights.safetensors").stat().st_mtime_ns == stamp

    straight = tmp_path / "straight"
    assert run_cli("suite", str(suite), "--out", str(straight), "--quiet").returncode == 0
    assert _results(interrupted) == _results(straight)
    for key in finished:
        assert ((cells / key / "weights.safetensors").read_bytes()
                == (straight / "cells" / key / "weights.safetensors").read_bytes())
