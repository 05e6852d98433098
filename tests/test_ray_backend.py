"""The Ray backend on a local cluster the test starts (head on 127.0.0.1, two one-CPU workers):
a suite's results equal the local backend's bit for bit, it resumes, and a worker killed
mid-suite is retried by Ray with the same results."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import TINY_SUITE, write_suite

from privbench.runner import run_suite
from privbench.suite import load_suite

ray = pytest.importorskip("ray")  # the `ray` extra; CI installs it through `dev`

LOOPBACK = "127.0.0.1"
# Files that are a pure function of the cell's spec and seed (result.json also holds times).
SAME_BYTES = ("weights.safetensors", "iterates.safetensors", "claim.json", "observations.json")


def _ray_start(temp_dir: str, *args: str) -> subprocess.Popen:
    """`ray start ... --block` as a child process of this test (stopped by its pid)."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    return subprocess.Popen([ray_cli, "start", f"--node-ip-address={LOOPBACK}",
                             f"--temp-dir={temp_dir}", "--disable-usage-stats", "--block", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@pytest.fixture(scope="module")
def cluster():
    """A head without CPUs and two worker nodes of one CPU each, all on loopback, in a temp
    folder of their own (so no other Ray user on this machine finds it); its address."""
    temp_dir = tempfile.mkdtemp(prefix="pbray")
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    address = f"{LOOPBACK}:{port}"
    procs = [_ray_start(temp_dir, "--head", f"--port={port}", "--num-cpus=0",
                        "--include-dashboard=false")]
    try:
        deadline = time.monotonic() + 300  # a loaded machine starts Ray slowly
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((LOOPBACK, port)) == 0:
                    break
            time.sleep(0.5)
        procs += [_ray_start(temp_dir, f"--address={address}", "--num-cpus=1")
                  for _ in range(2)]
        ray.init(address=address, logging_level="warning", log_to_driver=False)
        while sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]) < 2:
            assert time.monotonic() < deadline, "the two Ray workers did not join"
            time.sleep(0.5)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for proc in reversed(procs):  # `ray start --block` stops its node on SIGTERM
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


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
    run = run_suite(suite, tmp_path / "ray", backend="ray", address=cluster)
    assert [c.status for c in run.cells] == ["ok"] * 3 and run.loaded == []
    assert _values(run) == _values(local)
    _same_files(local.run_dir, run.run_dir, [c.key for c in suite.cells])
    assert all(c.peak_rss_mb and c.peak_rss_mb > 0 for c in run.cells)
    again = run_suite(suite, tmp_path / "ray", backend="ray", address=cluster)
    assert sorted(again.loaded) == sorted(c.key for c in suite.cells)
    assert _values(again) == _values(local)


def _descendants_running(task: str) -> list[int]:
    """Processes started (through the cluster) by this test that are running `task`."""
    parents: dict[int, int] = {}
    titles: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            titles[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, title in titles.items() if f"ray::{task}" in title and ours(pid)]


def test_a_worker_killed_mid_suite_is_retried_with_the_same_results(cluster, tiny, tmp_path):
    suite, local = tiny
    killed: list[int] = []

    def kill_once(event: tuple) -> None:
        if event[0] == "round" and not killed:
            pids = _descendants_running("cell_task")
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

    run = run_suite(suite, tmp_path / "ray", backend="ray", address=cluster,
                    on_event=kill_once)
    assert killed, "no Ray worker was running a cell when the first round was reported"
    assert [c.status for c in run.cells] == ["ok"] * 3
    assert _values(run) == _values(local)
    _same_files(local.run_dir, run.run_dir, [c.key for c in suite.cells])
