"""The Ray backend on a local cluster the test starts (head on 127.0.0.1, two one-CPU workers):
a suite's results equal the local backend's bit for bit, it resumes, and a worker killed
mid-suite is retried by Ray with the same results."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import TINY_SUITE, write_suite
from ray_cluster import LocalCluster, descendants, process_title

from privbench.governance.crypto import is_sealed, load_run_key, use_key, write_run_key
from privbench.run.cell_paths import cell_dir, read_cell_file
from privbench.run.manifest import check_run
from privbench.run.runner import run_suite
from privbench.spec.suite import load_suite

ray = pytest.importorskip("ray")  # the `ray` extra; CI installs it through `dev`

# Files that are a pure function of the cell's spec and seed (result.json also holds times).
SAME_BYTES = ("weights.safetensors", "iterates.safetensors", "claim.json", "observations.json")


@pytest.fixture(scope="module")
def cluster():
    """A head without CPUs and two worker nodes of one CPU each on loopback (tests/ray_cluster):
    own temp folder, own free ports, retried on a failed start, stopped by pid. It starts while
    the local baseline runs; a test's `cluster.ready()` waits for it."""
    local = LocalCluster(workers=2)
    local.start_in_background(warm="privbench.backends.ray")
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("suite")
    suite = load_suite(str(write_suite(folder / "tiny.toml", TINY_SUITE)), ["train.rounds=6"])
    local = run_suite(suite, folder / "local", workers=1)
    assert [c.status for c in local.cells] == ["ok"] * 3
    return suite, local


def _values(result) -> list:
    return [(c.key, m.scorer, m.metric, m.value, m.ci_low, m.ci_high)
            for c in result.cells for m in c.metrics]


def _same_files(a: Path, b: Path, keys: list[str]) -> None:
    for key in keys:
        for name in SAME_BYTES:
            left, right = a / "cells" / key / name, b / "cells" / key / name
            assert left.exists() == right.exists(), (key, name)
            if left.exists():
                assert left.read_bytes() == right.read_bytes(), (key, name)


def test_a_suite_on_ray_equals_the_local_run_and_resumes(cluster, tiny, tmp_path):
    suite, local = tiny
    run = run_suite(suite, tmp_path / "ray", backend="ray", address=cluster.ready())
    assert [c.status for c in run.cells] == ["ok"] * 3 and run.loaded == []
    assert _values(run) == _values(local)
    _same_files(local.run_dir, run.run_dir, [c.key for c in suite.cells])
    assert all(c.peak_rss_mb and c.peak_rss_mb > 0 for c in run.cells)
    again = run_suite(suite, tmp_path / "ray", backend="ray", address=cluster.address)
    assert sorted(again.loaded) == sorted(c.key for c in suite.cells)
    assert _values(again) == _values(local)


def _running(cluster: LocalCluster, task: str) -> list[int]:
    """Processes of this test's cluster that are running `task` now."""
    return [pid for pid in descendants([p.pid for p in cluster.procs])
            if f"ray::{task}" in process_title(pid)]


def test_a_worker_killed_mid_suite_is_retried_with_the_same_results(cluster, tiny, tmp_path):
    """Encrypted, too: the workers seal every file with the run key under its final name."""
    suite, local = tiny
    address = cluster.ready()
    killed: list[int] = []

    def kill_once(event: tuple) -> None:
        if event[0] == "round" and not killed:
            pids = _running(cluster, "cell_task")
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

    with use_key(load_run_key(write_run_key(tmp_path / "run.key"))):
        run = run_suite(suite, tmp_path / "ray", backend="ray", address=address,
                        on_event=kill_once, encrypt=True)
        assert killed, "no Ray worker was running a cell when the first round was reported"
        assert [c.status for c in run.cells] == ["ok"] * 3
        assert _values(run) == _values(local)
        assert check_run(run.run_dir).ok
        for cell in suite.cells:
            for name in SAME_BYTES:
                stored = cell_dir(run.run_dir, cell.key) / name
                if (cell_dir(local.run_dir, cell.key) / name).exists():
                    assert is_sealed(stored.read_bytes()), (cell.key, name)
                    assert (read_cell_file(run.run_dir, cell.key, name)
                            == read_cell_file(local.run_dir, cell.key, name)), (cell.key, name)
