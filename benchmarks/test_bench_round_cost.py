"""Round cost against the round index (rounds 10 to 1,000) and the cohort (10 to 1,000), and a
DP cell's round against the same cell's non-DP round (issue 22).

Each benchmark times single rounds of a whole cell's training loop, as `privbench.run.cell` runs it:
`train_fedavg` with the cell's round monitor (rounds.jsonl, epsilon spent against the plan) and
its work folder (ledger, checkpoints). The loop runs in a thread that pauses after every round,
so each benchmark call is exactly one round (plus a thread hand-over of some microseconds).

Run: .venv/bin/python -m pytest benchmarks/test_bench_round_cost.py -q -s
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from privbench.data.partition import partition
from privbench.data.splits import SplitData, load_split
from privbench.models import build_model
from privbench.privacy.budget_monitor import BudgetMonitor
from privbench.spec.schema import CellSpec
from privbench.trainers import tabular_inputs, train_fedavg

BENCH_ROUNDS = 20  # rounds timed per benchmark


class _Stop(Exception):
    pass


class SteppedCell:
    """A cell's training loop in a thread that pauses after each round; `step` runs one."""

    def __init__(self, spec: CellSpec, folder: Path) -> None:
        self.spec, self.done_rounds = spec, 0
        self._go, self._done = threading.Event(), threading.Event()
        self._stop, self.error = False, None
        data = load_split(spec.data, spec.seed) if spec.data.clients <= 800 else _synthetic(
            spec.data.clients)
        shards = partition(spec.data, data.y_train, spec.seed)
        model = build_model(spec.model, data.n_features, data.n_classes, spec.seed)
        monitor = BudgetMonitor(folder / "rounds.jsonl", spec)

        def target() -> None:
            try:
                train_fedavg(*tabular_inputs(model, data, shards), spec.train, spec.privacy,
                             spec.seed, on_round=self._pause, work_dir=folder / "work",
                             on_record=monitor)
            except _Stop:
                pass
            except Exception as e:  # surfaced by step()
                self.error = e
            self._done.set()

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()
        self._done.wait()  # start-up and round 1
        self._done.clear()

    def _pause(self, done: int, total: int) -> None:
        self.done_rounds = done
        self._done.set()
        self._go.wait()
        self._go.clear()
        if self._stop:
            raise _Stop

    def step(self) -> None:
        """Run one round and wait until it has finished."""
        if self.done_rounds >= self.spec.train.rounds:
            raise RuntimeError("the run has no rounds left: plan more rounds")
        self._go.set()
        self._done.wait()
        self._done.clear()
        if self.error is not None:
            raise self.error

    def advance_to(self, round_no: int) -> None:
        while self.done_rounds < round_no:
            self.step()

    def close(self) -> None:
        self._stop = True
        self._go.set()
        self._thread.join()


def _synthetic(clients: int, per_client: int = 8, seed: int = 0) -> SplitData:
    """Digits-shaped data (64 features, 10 classes) with `per_client` records per client, for
    cohorts beyond what digits' 898 training records can split into."""
    rng = np.random.default_rng(seed)
    n = clients * per_client
    centres = rng.normal(size=(10, 64)).astype(np.float32)
    y = rng.integers(0, 10, n + 400)
    x = (centres[y] + rng.normal(size=(n + 400, 64))).astype(np.float32)
    return SplitData("synthetic", x[:n], y[:n], x[n:n + 200], y[n:n + 200], x[n + 200:],
                     y[n + 200:], 10)


def _spec(epsilon: float, clients: int = 100, cohort: float = 10, rounds: int = 200,
          hidden: int = 256, seed_offset: int = 0) -> CellSpec:
    return CellSpec.model_validate({
        "seed": seed_offset, "data": {"clients": clients}, "model": {"hidden": [hidden]},
        "train": {"rounds": rounds, "cohort": cohort, "batch_size": 16},
        "privacy": {"epsilon": epsilon}})


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Any:
    torch.set_num_threads(1)
    opened: dict[tuple, SteppedCell] = {}

    def get(**kwargs: Any) -> SteppedCell:
        key = tuple(sorted(kwargs.items()))
        if key not in opened:
            opened[key] = SteppedCell(_spec(**kwargs), tmp_path_factory.mktemp("cell"))
        return opened[key]

    yield get
    for cell in opened.values():
        cell.close()


def _time_rounds(benchmark, cell: SteppedCell, start: int) -> None:
    cell.advance_to(start)
    benchmark.pedantic(cell.step, rounds=BENCH_ROUNDS, iterations=1)
    benchmark.extra_info.update(first_round=start + 1, last_round=cell.done_rounds)


@pytest.mark.benchmark(group="round-index (DP, 100 clients, cohort 10)")
@pytest.mark.parametrize("start", [10, 100, 1000], ids=["baseline: round 10", "round 100",
                                                       "round 1000"])
def test_round_cost_against_the_round_index(benchmark, cells, start):
    _time_rounds(benchmark, cells(epsilon=4.0, rounds=1000 + 2 * BENCH_ROUNDS), start)


@pytest.mark.benchmark(group="dp-vs-non-dp (100 clients, cohort 10)")
@pytest.mark.parametrize("epsilon", [float("inf"), 4.0], ids=["baseline: non-DP", "DP eps 4"])
def test_dp_round_against_the_non_dp_round(benchmark, cells, epsilon):
    _time_rounds(benchmark, cells(epsilon=epsilon), 10)


@pytest.mark.parametrize("cohort", [10, 100, 1000])
@pytest.mark.parametrize("epsilon", [float("inf"), 4.0], ids=["baseline: non-DP", "DP eps 4"])
def test_round_cost_against_the_cohort(benchmark, cells, cohort, epsilon):
    benchmark.group = f"cohort {cohort} of 1000 clients"
    _time_rounds(benchmark, cells(epsilon=epsilon, clients=1000, cohort=cohort, rounds=100), 5)


def _paired(benchmark, first: SteppedCell, second: SteppedCell) -> float:
    """Time rounds of two cells alternately (so a busy machine slows both alike); the median
    of second/first over the pairs goes into extra_info and is returned."""
    ratios: list[float] = []

    def pair() -> None:
        t0 = time.perf_counter()
        first.step()
        t1 = time.perf_counter()
        second.step()
        ratios.append((time.perf_counter() - t1) / (t1 - t0))

    benchmark.pedantic(pair, rounds=3 * BENCH_ROUNDS, iterations=1)
    ratio = statistics.median(ratios)
    benchmark.extra_info["paired_median_ratio"] = ratio
    print(f"\n{benchmark.name}: paired median ratio {ratio:.3f}")
    return ratio


@pytest.mark.benchmark(group="paired")
def test_paired_dp_round_over_non_dp_round(benchmark, cells):
    nodp, dp = cells(epsilon=float("inf")), cells(epsilon=4.0)
    nodp.advance_to(10 + 2 * BENCH_ROUNDS)
    dp.advance_to(10 + 2 * BENCH_ROUNDS)
    _paired(benchmark, nodp, dp)


@pytest.mark.benchmark(group="paired")
def test_paired_round_1000_over_round_10(benchmark, cells):
    late = cells(epsilon=4.0, rounds=1000 + 4 * BENCH_ROUNDS)
    late.advance_to(1000)
    early = cells(epsilon=4.0, rounds=1000 + 4 * BENCH_ROUNDS, seed_offset=1)  # a second run
    early.advance_to(10)
    _paired(benchmark, early, late)
