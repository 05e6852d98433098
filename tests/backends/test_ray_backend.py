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


def test_shadow_and_multi_run_audit_batches_are_ray_tasks_with_the_local_results(
        cluster, monkeypatch):
    """Inside a cell on the Ray backend (`ray_batches`, which the cell task turns on), shadow
    chunks and multi-run audit chunks are Ray tasks; their results equal the local ones bit for
    bit. 12 shadows are chunks of 8 and 4; 12 audit runs chunks of 4."""
    import numpy as np
    import torch

    from privbench.attacks.membership.shadows import CHUNK, ShadowPlan, train_shadows
    from privbench.audit import multi_run
    from privbench.backends import batches
    from privbench.data.splits import load_split
    from privbench.models import build_model
    from privbench.spec.schema import CellSpec
    from privbench.trainers.privacy_plan import make_plan

    spec = CellSpec.model_validate({
        "data": {"name": "breast_cancer", "clients": 4}, "model": {"hidden": [8]},
        "train": {"rounds": 2, "cohort": 2, "batch_size": 8, "lr": 0.1},
        "privacy": {"epsilon": 4.0, "clip": 0.5, "unit": "example"}})
    data = load_split(spec.data, 0)
    model = build_model(spec.model, data.n_features, data.n_classes, 0)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    inclusion = np.random.default_rng(0).random((CHUNK + 4, len(data.y_train))) < 0.5
    plan = ShadowPlan(spec.data, spec.train, 1.1, 0.5, seed=3)
    mr_plan = make_plan(spec.train, spec.privacy, 1, mean_shard=float(len(data.y_train)))
    monkeypatch.setattr(multi_run, "CHUNK_FLOATS", 4 * len(data.y_train) * data.n_features)

    def both() -> tuple:
        return (train_shadows(model, init, data.x_train, data.y_train, inclusion, plan),
                multi_run.run_canary_coordinates(spec, data, mr_plan, 3, runs=6, rounds=2,
                                                 seed=3)[0])

    local_shadows, local_values = both()
    cluster.ready()
    sent = batches.dispatched
    with batches.ray_batches():
        ray_shadows, ray_values = both()
    assert batches.dispatched - sent == 2 + 3  # 2 shadow chunks, 3 audit chunks
    for name, p in local_shadows.items():
        assert p.shape[0] == CHUNK + 4 and torch.equal(ray_shadows[name], p), name
    assert local_values.shape == (12, 3) and np.array_equal(ray_values, local_values)


def test_a_cells_lira_shadows_on_ray_are_tasks_with_the_local_metrics(cluster, tmp_path):
    """The Ray cell task turns batches on: a LiRA cell's 12 shadows train as 2 Ray tasks, and
    its metrics equal the same cell run locally."""
    from privbench.backends import batches
    from privbench.backends.ray import cell_task
    from privbench.run.cell import run_cell

    cell = load_suite(str(write_suite(tmp_path / "lira.toml", TINY_SUITE)), [
        "data.name=breast_cancer", "data.clients=4", "train.rounds=2", "train.cohort=2",
        "attacks.lira.enabled=true", "attacks.shadows.models=12"]).cells[1]  # epsilon 8
    local = run_cell(cell, tmp_path / "local")
    cluster.ready()
    sent = batches.dispatched
    remote, files = cell_task(cell, None)  # as a Ray worker runs it
    assert local.status == remote.status == "ok" and files
    assert batches.dispatched - sent == 2
    assert [(m.scorer, m.metric, m.value) for m in remote.metrics] == \
        [(m.scorer, m.metric, m.value) for m in local.metrics]
    assert any(m.scorer.startswith("lira") for m in local.metrics)
