"""The Ray backend: every cell a Ray task, on a cluster or on a Ray instance started for the run.

`privbench suite ... --backend ray [--address HOST:PORT]` connects to the cluster at the address
(default: the RAY_ADDRESS environment variable); without one, a local Ray instance starts with
the run and stops with it. A task runs the cell through the same `run_cell` as the local backend,
with one torch thread, into a scratch run folder on its worker, and returns the cell's result
and the bytes of its stored folder; the driver writes that folder into the run folder (written
aside, then renamed, as `run_cell` does). So workers need no shared file system, the run lock,
the manifests and the results store stay with the driver, and a cluster run resumes from, and
equals bit for bit, a local run at the same seeds.

Faults: a worker process or node that dies mid-task makes Ray run the task again (up to
`RETRIES` times; a cell is a pure function of its spec, so the retry gives the same result). A
cell that fails for its own reasons is not retried: `run_cell` returns it with status "error".
Round events travel through a Ray queue actor. Inside a cell task, the cell's batches of
independent runs (shadow-model chunks, multi-run audit chunks) are Ray tasks of their own
(privbench/backends/batches.py), with the local backend's results bit for bit.

Encrypted runs: the task's scratch folder carries the run's encryption record and the task the
run key, so the worker seals every file (and its work folder's checkpoints and ledger) under the
same names as in the run folder; the driver only moves sealed bytes. The key travels to the
workers in the task's arguments, as it does to the local pool's processes: run an encrypted
suite only on a cluster you trust with it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from privbench.backends.base import Event
from privbench.backends.batches import ray_batches
from privbench.backends.local import worker_failed
from privbench.errors import PrivbenchError
from privbench.governance.crypto import RunKey, active_run_key, use_key
from privbench.run.cell import run_cell
from privbench.run.cell_paths import cell_dir
from privbench.run.manifest import record_run
from privbench.run.results import CellResult
from privbench.run.sealed import run_encryption
from privbench.spec.suite import Cell

RETRIES = 3  # Ray's reruns of a task whose worker died
POLL_S = 0.05  # how often round events are collected while cells run
LOCAL_STARTS = 2  # tries to start a local Ray instance


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise PrivbenchError("--backend ray: Ray is not installed; pip install "
                             "'privbench[ray]'") from None
    return ray


def cell_task(cell: Cell, events: Any, key: RunKey | None = None,
              encryption: dict[str, str] | None = None) -> tuple[CellResult, dict[str, bytes]]:
    """Run one cell in a scratch run folder; its result and its folder's files (path -> bytes).

    Args:
        cell: the cell.
        events: a ray.util.queue.Queue for ("round", key, (done, total)) events, or None.
        key: the run key of an encrypted run (None for a plaintext run).
        encryption: the run's encryption record (privbench.run.sealed.run_encryption), or None.

    Returns:
        (result, files); files is empty for a cell that failed (nothing is stored for it).
    """
    import torch

    torch.set_num_threads(1)

    def report(done: int, total: int) -> None:
        if events is not None:
            events.put_nowait(("round", cell.key, (done, total)))

    with tempfile.TemporaryDirectory(prefix="privbench-ray-") as tmp, use_key(key), \
            ray_batches():  # the cell's shadow and audit chunks: Ray tasks too
        if encryption is not None:  # the scratch run is sealed as the run folder is
            record_run(Path(tmp), encryption=encryption)
        result = run_cell(cell, Path(tmp), on_round=report)
        folder = cell_dir(Path(tmp), cell.key)
        files = {} if result.status != "ok" or not folder.exists() else {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}
    return result, files


def store_cell_files(run_dir: Path, key: str, files: dict[str, bytes]) -> None:
    """Write a cell folder returned by a task into `run_dir`: aside, then renamed into place.

    Args:
        run_dir: the run folder; key: the cell's content hash; files: path inside the cell
            folder -> bytes (already sealed in an encrypted run).
    """
    final = cell_dir(Path(run_dir), key)
    tmp = final.with_name(f".{key}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    for name, data in files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


class RayBackend:
    """Cells as Ray tasks on the cluster at `address`, or on a local Ray instance."""

    def __init__(self, workers: int, address: str | None = None):
        self.workers = max(1, workers)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self._ray = _import_ray()
        self._started = False
        self._temp_dir: str | None = None
        self._queue: Any = None
        self._pending: dict[Any, Cell] = {}
        self._run_dir = Path(".")

    def _start(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        try:
            if self.address:
                ray.init(address=self.address, logging_level="warning", log_to_driver=False)
            else:
                self._start_local()
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"--address {self.address}" if self.address else "--backend ray"
            raise PrivbenchError(f"{where}: cannot start or reach Ray ({e}); check the "
                                 "address (`ray status`) or drop it to start a local Ray") from None
        self._started = True

    def _start_local(self) -> None:
        """A Ray instance of this run's own: `address="local"` (never another Ray found on this
        machine), in a temp folder of its own; started again once when a loaded machine makes
        Ray's fixed wait for its node run out."""
        for attempt in range(LOCAL_STARTS):
            self._temp_dir = tempfile.mkdtemp(prefix="pbray")  # short: Ray's socket paths
            try:
                self._ray.init(address="local", num_cpus=self.workers, include_dashboard=False,
                               logging_level="warning", log_to_driver=False,
                               _temp_dir=self._temp_dir)
                return
            except Exception as e:  # Ray raises a bare Exception when its node times out
                self._ray.shutdown()
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None
                if attempt == LOCAL_STARTS - 1:
                    raise RuntimeError(f"a local Ray did not start: {e}") from None

    def submit(self, cells: Sequence[Cell], run_dir: Path) -> None:
        """Start one Ray task per cell.

        Starts Ray (or joins the cluster) on first use; the run key travels with each task when the
        run is encrypted.

        Args:
            cells: the cells to run; run_dir: the run folder.
        """
        if not cells:
            return
        self._start()
        from ray.util.queue import Queue

        self._run_dir = Path(run_dir)
        if self._queue is None:
            self._queue = Queue(actor_options={"num_cpus": 0})
        task = self._ray.remote(num_cpus=1, max_retries=RETRIES,
                                retry_exceptions=False)(cell_task)
        encryption = run_encryption(self._run_dir)
        key = active_run_key() if encryption is not None else None
        for cell in cells:
            self._pending[task.remote(cell, self._queue, key, encryption)] = cell

    def events(self) -> Iterator[Event]:
        """Round events while the tasks run, and each cell's ("done", key, result)."""
        ray = self._ray
        while self._pending:
            finished, _ = ray.wait(list(self._pending), num_returns=1, timeout=POLL_S)
            yield from self._drain()
            for ref in finished:
                cell = self._pending.pop(ref)
                try:
                    result, files = ray.get(ref)
                except Exception as e:  # retries spent, or the task could not run
                    result, files = worker_failed(cell, e), {}
                if files:
                    store_cell_files(self._run_dir, cell.key, files)
                yield ("done", cell.key, result)
        yield from self._drain()

    def _drain(self) -> Iterator[Event]:
        if self._queue is None:
            return
        n = self._queue.qsize()
        if n:
            yield from self._queue.get_nowait_batch(n)

    def close(self) -> None:
        """Stop the queue actor, and the local Ray instance when this backend started it."""
        if self._queue is not None:
            self._queue.shutdown()
            self._queue = None
        if self._started:
            self._ray.shutdown()
            self._started = False
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
