"""Run a suite: finished cells are loaded, the rest run in a local process pool, then written.

Each worker process uses one torch thread, and so does a single in-process run, so the numbers do
not depend on `--workers`. A cell that raises is reported with its error; the others still finish.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import privbench
from privbench.cell import load_finished, run_cell
from privbench.results import CellResult, write_json, write_sqlite
from privbench.suite import Cell, Suite

# (kind, cell key, payload): ("round", key, (done, total)) or ("done", key, CellResult)
Event = tuple[str, str, Any]
EventSink = Callable[[Event], None]


@dataclass
class RunResult:
    """A finished suite run: its folder and the result of every cell, in sweep order."""

    suite: Suite
    run_dir: Path
    cells: list[CellResult]
    loaded: list[str]  # keys of cells loaded from a previous run instead of recomputed

    @property
    def failed(self) -> list[CellResult]:
        return [c for c in self.cells if c.status != "ok"]


def default_run_dir(suite: Suite, root: Path = Path("reports")) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return root / f"{suite.spec.name}-{stamp}"


def run_suite(suite: Suite, run_dir: Path, *, workers: int | None = None,
              on_event: EventSink | None = None) -> RunResult:
    """Run every cell of `suite` into `run_dir`, reusing finished cells found there."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "suite.json", {
        "source": suite.source,
        "privbench_version": privbench.__version__,
        "spec": suite.spec.model_dump(),
        "cells": [{"key": c.key, "label": c.label, "axes": c.axes} for c in suite.cells],
    })
    sink = on_event or (lambda event: None)
    results: dict[str, CellResult] = {}
    loaded = []
    for cell in suite.cells:
        done = load_finished(run_dir, cell.key)
        if done is not None:
            results[cell.key] = done
            loaded.append(cell.key)
            sink(("done", cell.key, done))
    todo = [c for c in suite.cells if c.key not in results]
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    if todo and n_workers == 1:
        _run_inline(todo, run_dir, sink, results)
    elif todo:
        _run_pool(todo, run_dir, n_workers, sink, results)
    ordered = [results[c.key] for c in suite.cells]
    _write_outputs(suite, run_dir, ordered)
    return RunResult(suite=suite, run_dir=run_dir, cells=ordered, loaded=loaded)


def _run_inline(todo: list[Cell], run_dir: Path, sink: EventSink,
                results: dict[str, CellResult]) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for cell in todo:
            result = run_cell(cell, run_dir,
                              on_round=lambda d, t, k=cell.key: sink(("round", k, (d, t))))
            results[cell.key] = result
            sink(("done", cell.key, result))
    finally:
        torch.set_num_threads(threads)


def _worker_init() -> None:
    torch.set_num_threads(1)


def _pool_cell(cell: Cell, run_dir: Path, events: Any) -> CellResult:
    def report(done: int, total: int) -> None:
        events.put(("round", cell.key, (done, total)))

    return run_cell(cell, run_dir, on_round=report)


def _run_pool(todo: list[Cell], run_dir: Path, n_workers: int, sink: EventSink,
              results: dict[str, CellResult]) -> None:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        events = manager.Queue()
        with ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_worker_init) as pool:
            pending: dict[Future, Cell] = {
                pool.submit(_pool_cell, cell, run_dir, events): cell for cell in todo
            }
            while pending:
                finished, _ = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                _drain(events, sink)
                for fut in finished:
                    cell = pending.pop(fut)
                    try:
                        result = fut.result()
                    except Exception as e:  # the worker itself died
                        result = CellResult(key=cell.key, label=cell.label, axes=cell.axes,
                                            status="error", spec=cell.spec.model_dump(),
                                            error=f"worker failed: {type(e).__name__}: {e}")
                    results[cell.key] = result
                    sink(("done", cell.key, result))
            _drain(events, sink)


def _drain(events: Any, sink: EventSink) -> None:
    while True:
        try:
            sink(events.get_nowait())
        except queue.Empty:
            return


def _write_outputs(suite: Suite, run_dir: Path, cells: list[CellResult]) -> None:
    """results.sqlite, results.json and index.html from every cell's result."""
    from privbench.report import write_report  # matplotlib is imported only when reporting

    write_sqlite(run_dir / "results.sqlite", cells)
    write_json(run_dir / "results.json", results_document(suite, cells))
    write_report(run_dir, suite, cells)


def results_document(suite: Suite, cells: list[CellResult]) -> dict[str, Any]:
    """The machine-readable results of a run."""
    return {
        "suite": suite.spec.name,
        "source": suite.source,
        "privbench_version": privbench.__version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cells": [c.to_dict() for c in cells],
    }
