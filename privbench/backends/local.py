"""The local backend: cells in a process pool on this machine (or in this process for one worker).

Each worker process uses one torch thread, and so does a single in-process run, so the numbers do
not depend on the worker count. A worker process that dies (killed, out of memory) makes its cell
a result with status "error"; the other cells still finish. Spawned workers start without the
parent's run key (privbench.governance.crypto), so it is handed to each of them, and an encrypted
run's
cells are sealed in the workers exactly as in the parent.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from privbench.backends.base import Event
from privbench.governance.crypto import active_run_key, set_run_key
from privbench.run.cell import run_cell
from privbench.run.results import CellResult
from privbench.spec.suite import Cell

_DONE = object()  # the inline runner's end-of-cells marker


def worker_failed(cell: Cell, error: BaseException) -> CellResult:
    """The result of a cell whose worker died or whose task could not run.

    Args:
        cell: the cell; error: what killed its worker.
    Returns:
        An "error" CellResult naming the exception (not stored, so a resume tries it again).
    """
    return CellResult(key=cell.key, label=cell.label, axes=cell.axes, status="error",
                      spec=cell.spec.model_dump(),
                      error=f"worker failed: {type(error).__name__}: {error}")


class LocalBackend:
    """Cells in `workers` spawned processes, or in a thread of this process for one worker."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self._cells: list[Cell] = []
        self._run_dir = Path(".")

    def submit(self, cells: Sequence[Cell], run_dir: Path) -> None:
        """Queue `cells`; they start when `events` is iterated.

        Args:
            cells: the cells to run; run_dir: the run folder.
        """
        self._cells.extend(cells)
        self._run_dir = Path(run_dir)

    def events(self) -> Iterator[Event]:
        """Round and done events of the submitted cells, as they happen."""
        if not self._cells:
            return iter(())
        if self.workers == 1 or len(self._cells) == 1:
            return self._inline()
        return self._pool()

    def close(self) -> None:
        """Nothing outlives `events`: the pool is shut down when its cells are done."""

    def _inline(self) -> Iterator[Event]:
        # The cells run in one thread so that their round events reach the caller live.
        events: queue.Queue = queue.Queue()
        cells, run_dir = list(self._cells), self._run_dir

        def work() -> None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for cell in cells:
                    result = run_cell(cell, run_dir, on_round=lambda d, t, k=cell.key:
                                          events.put(("round", k, (d, t))))
                    events.put(("done", cell.key, result))
            finally:
                torch.set_num_threads(threads)
                events.put(_DONE)

        thread = threading.Thread(target=work, name="privbench-cells", daemon=True)
        thread.start()
        while (event := events.get()) is not _DONE:
            yield event
        thread.join()

    def _pool(self) -> Iterator[Event]:
        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager:
            events = manager.Queue()
            with ProcessPoolExecutor(min(self.workers, len(self._cells)), mp_context=ctx,
                                     initializer=_worker_init,
                                     initargs=(active_run_key(),)) as pool:
                pending: dict[Future, Cell] = {
                    pool.submit(_pool_cell, cell, self._run_dir, events): cell
                    for cell in self._cells
                }
                while pending:
                    finished, _ = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                    yield from _drain(events)
                    for fut in finished:
                        cell = pending.pop(fut)
                        try:
                            result = fut.result()
                        except Exception as e:  # the worker itself died
                            result = worker_failed(cell, e)
                        yield ("done", cell.key, result)
                yield from _drain(events)


def _worker_init(key: Any = None) -> None:
    """One torch thread per worker; the parent's run key (spawned workers start without it)."""
    torch.set_num_threads(1)
    set_run_key(key)


def _pool_cell(cell: Cell, run_dir: Path, events: Any) -> CellResult:
    def report(done: int, total: int) -> None:
        events.put(("round", cell.key, (done, total)))

    return run_cell(cell, run_dir, on_round=report)


def _drain(events: Any) -> Iterator[Event]:
    while True:
        try:
            yield events.get_nowait()
        except queue.Empty:
            return
