"""Run a suite: finished cells are loaded, the rest run on a backend, then the results written.

The backend (privbench.backends: a local process pool, or Ray) only runs cells through
`run_cell`; everything else is this module's, the same for every backend. Each cell uses one
torch thread, so the numbers depend neither on `--workers` nor on the backend. A cell that raises
is reported with its error; the others still finish.

The run folder is locked while the run writes into it (privbench.run.runlock), and every file it
stores is hashed into the run manifest (privbench.run.manifest) as it is written. Resuming a folder
whose run-level files no longer match their hashes is refused; a cell whose files fail their
hashes is recomputed instead of loaded, with a ("recompute", key, reason) event.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import privbench
from privbench.backends import make_backend
from privbench.backends.base import Backend, Event, EventSink
from privbench.errors import PrivbenchError
from privbench.governance.crypto import active_run_key
from privbench.run.cell import load_finished
from privbench.run.cell_paths import RESULT_FILE, cell_dir
from privbench.run.manifest import (
    MANIFEST_FILE,
    check_run,
    file_hash,
    read_run_manifest,
    record_run,
    run_digest,
)
from privbench.run.paths import safe_folder_name
from privbench.run.results import CellResult, json_safe, write_json, write_sqlite
from privbench.run.runlock import run_lock
from privbench.run.sealed import encryption_record, run_key_for
from privbench.spec.limits import check_memory
from privbench.spec.suite import Suite

__all__ = ["Event", "EventSink", "RunResult", "default_run_dir", "load_run", "run_suite"]


@dataclass
class RunResult:
    """A finished suite run: its folder and the result of every cell, in sweep order."""

    suite: Suite
    run_dir: Path
    cells: list[CellResult]
    loaded: list[str]  # keys of cells loaded from a previous run instead of recomputed
    gates: Any = None  # the GateReport when a policy was given
    recomputed: dict[str, str] = field(default_factory=dict)  # key -> why it was not loaded

    @property
    def failed(self) -> list[CellResult]:
        """The cells whose status is not "ok", in order."""
        return [c for c in self.cells if c.status != "ok"]


def default_run_dir(suite: Suite, root: Path = Path("reports")) -> Path:
    """`root/<suite name>-<UTC time>`, the name made a safe folder name (it stays in `root`).

    Args:
        suite: the loaded suite; root: the reports folder.
    Returns:
        `root/<suite name>-<YYYYmmdd-HHMMSS>`.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return root / f"{safe_folder_name(suite.spec.name)}-{stamp}"


def run_suite(suite: Suite, run_dir: Path, *, workers: int | None = None,
              on_event: EventSink | None = None, policy: Any = None, encrypt: bool = False,
              signing_key: Any = None, show_private_text: bool = False, backend: str = "local",
              address: str | None = None, max_memory_gb: float | None = None) -> RunResult:
    """Run every cell of `suite` into `run_dir`, reusing finished cells found there.

    With a `policy` (privbench.gates.policy.Policy) the finished run is gated and the report shows
    the
    verdict. Every run appends an entry to the audit trail beside the run folder.

    Args:
        suite: the validated suite.
        run_dir: the run folder; a folder of an earlier run of it is resumed.
        workers: parallel cells (default: the number of cores).
        on_event: receives ("round" | "done" | "recompute", key, payload) events.
        policy: a privbench.gates.policy.Policy to gate the finished run with, or None.
        encrypt: seal every stored file with this process's run key (privbench.governance.crypto); a
            folder of an encrypted run stays encrypted on resume.
        signing_key: an Ed25519 private key: sign the trail entry, the run manifest and
            gates.json (privbench.governance.signatures).
        show_private_text: the report shows raw private text (privbench.report.render.write_report).
        backend: "local" (process pool) or "ray" (privbench.backends).
        address: the Ray cluster's HOST:PORT (Ray backend; default RAY_ADDRESS, else a local
            Ray instance for the run).
        max_memory_gb: refuse a cell whose memory estimate exceeds this (default: the suite's
            `max_memory_gb`, else no limit beyond the memory available here).

    Returns:
        The RunResult.

    Raises:
        RunLocked: another process is writing into `run_dir`.
        PrivbenchError: `run_dir` holds a run whose run-level files do not match their hashes.
        OSError: `run_dir` cannot be written.
    """
    # Memory limits before anything is written or locked: the cells without a stored result
    # (resume verifies and may recompute more; those had fit once already).
    unfinished = [c for c in suite.cells
                  if not (cell_dir(Path(run_dir), c.key) / RESULT_FILE).exists()]
    limit = max_memory_gb if max_memory_gb is not None else suite.spec.max_memory_gb
    remote = backend == "ray" and bool(address or os.environ.get("RAY_ADDRESS"))
    # A cluster's cells do not share this machine's memory: only the per-cell limit applies.
    check_memory(unfinished, max(1, min(workers or os.cpu_count() or 1, len(unfinished) or 1)),
                 available=float("inf") if remote else None,
                 max_bytes=None if limit is None else limit * 1e9)
    if encrypt and active_run_key() is None:
        raise PrivbenchError("--encrypt: no run key; give --key-file FILE or set $PRIVBENCH_KEY "
                             "(`privbench keygen --encryption FILE` writes one)")
    runner = make_backend(backend, workers or os.cpu_count() or 1, address)
    with run_lock(run_dir):
        return _run_locked(suite, Path(run_dir), runner, on_event or (lambda event: None),
                           policy, encrypt, signing_key, show_private_text)


def _refuse_unverified(run_dir: Path) -> dict[str, Any] | None:
    """The previous run's manifest, after checking its run-level files; refuse on a mismatch."""
    manifest = read_run_manifest(run_dir)
    if manifest is None:
        return None
    check = check_run(run_dir, include_cells=False)
    if not check.ok:
        raise PrivbenchError(f"{run_dir}: the run does not verify: {check.reason}; resuming "
                             f"would overwrite it: check it with `privbench verify {run_dir}` "
                             "or run into a new folder")
    return manifest


def _encryption(run_dir: Path, previous: dict[str, Any] | None, encrypt: bool) -> None:
    """Start an encrypted run, or check the key of one being resumed, before anything is
    written; a plaintext run folder is never half-encrypted."""
    enc = previous.get("encryption") if previous else None
    if enc is not None:
        run_key_for(run_dir, enc, "resume")
    elif encrypt and previous is not None:
        raise PrivbenchError(f"--encrypt: {run_dir} holds a plaintext run; resuming it "
                             "encrypted would mix plaintext and sealed files: choose a new --out")
    elif encrypt:
        record_run(run_dir, encryption=encryption_record(active_run_key()))


def _run_locked(suite: Suite, run_dir: Path, backend: Backend, sink: EventSink,
                policy: Any, encrypt: bool = False, signing_key: Any = None,
                show_private_text: bool = False) -> RunResult:
    previous = _refuse_unverified(run_dir)
    _encryption(run_dir, previous, encrypt)
    recorded = previous["cells"] if previous else {}
    write_json(run_dir / "suite.json", {
        "source": suite.source,
        "privbench_version": privbench.__version__,
        "spec": suite.spec.model_dump(),
        "cells": [{"key": c.key, "label": c.label, "axes": c.axes} for c in suite.cells],
    })
    record_run(run_dir, files=("suite.json",))
    results: dict[str, CellResult] = {}
    loaded, recomputed = [], {}
    for cell in suite.cells:
        done, why = load_finished(run_dir, cell.key, recorded.get(cell.key))
        if done is not None:
            record_run(run_dir, cells={cell.key: _cell_manifest_hash(run_dir, cell.key)})
            results[cell.key] = done
            loaded.append(cell.key)
            sink(("done", cell.key, done))
        elif why:
            recomputed[cell.key] = why
            sink(("recompute", cell.key, why))
    sink = _recording(run_dir, sink)
    todo = [c for c in suite.cells if c.key not in results]
    try:
        backend.submit(todo, run_dir)
        for kind, key, payload in backend.events():
            if kind == "done":
                results[key] = payload
            sink((kind, key, payload))
    finally:
        backend.close()
    ordered = [results[c.key] for c in suite.cells]
    gates = _write_outputs(suite, run_dir, ordered, policy, signing_key, show_private_text)
    return RunResult(suite=suite, run_dir=run_dir, cells=ordered, loaded=loaded, gates=gates,
                     recomputed=recomputed)


def _cell_manifest_hash(run_dir: Path, key: str) -> str:
    return file_hash(cell_dir(run_dir, key) / MANIFEST_FILE)


def _recording(run_dir: Path, sink: EventSink) -> EventSink:
    """`sink`, recording each cell stored as finished into the run manifest first."""
    def record(event: Event) -> None:
        kind, key, payload = event
        if kind == "done" and payload.status == "ok":
            record_run(run_dir, cells={key: _cell_manifest_hash(run_dir, key)})
        sink(event)

    return record


def _write_outputs(suite: Suite, run_dir: Path, cells: list[CellResult],
                   policy: Any = None, signing_key: Any = None,
                   show_private_text: bool = False) -> Any:
    """results.sqlite, results.json, gates.json (with a policy) and index.html; then the audit
    trail entry and, with a signing key, the run's signatures. Returns the GateReport or None."""
    from privbench.gates.evaluate import evaluate, write_gate_report
    from privbench.governance.audit_trail import append_run, default_log_path
    from privbench.governance.signatures import sign_run
    from privbench.report.render import write_report  # matplotlib is imported only when reporting

    # Unlisted while they are rewritten: a crash in between leaves no stale hash that would make
    # the next resume refuse the folder.
    record_run(run_dir, drop=("results.sqlite", "results.json", "gates.json", "index.html"))
    write_sqlite(run_dir / "results.sqlite", cells)
    write_json(run_dir / "results.json", results_document(suite, cells))
    gates, written = None, ["results.sqlite", "results.json", "index.html"]
    if policy is not None:
        gates = evaluate(cells, policy)
        write_gate_report(run_dir, gates)
        written.append("gates.json")
    elif (run_dir / "gates.json").exists():
        (run_dir / "gates.json").unlink()  # a stale verdict must not outlive the run it gated
    write_report(run_dir, suite, cells, gates=gates, show_private_text=show_private_text)
    manifest = record_run(run_dir, files=tuple(written),
                          only_cells=[c.key for c in cells if c.status == "ok"])
    append_run(default_log_path(run_dir), suite=suite.spec.name, run_dir=run_dir,
               spec=json_safe(suite.spec.model_dump()),
               data_fingerprints=[c.data_fingerprint for c in cells if c.data_fingerprint],
               results_path=run_dir / "results.json", manifest_hash=run_digest(manifest),
               signing_key=signing_key)
    sign_run(run_dir, signing_key)
    return gates


def load_run(run_dir: Path, what: str = "this command") -> tuple[Suite, list[CellResult]]:
    """The suite and cell results of a finished run folder, as written by `run_suite`.

    Args:
        run_dir: the run folder; what: the command, named in the refusal.
    Returns:
        (the suite re-expanded from suite.json, the cells' results).
    Raises:
        PrivbenchError: the folder is not a run folder, or does not verify (a file differs from
            its hash, or the run manifest from the audit-trail entry of the run).
    """
    from privbench.gates.evaluate import load_cells
    from privbench.governance.run_verification import require_verified
    from privbench.run.results import read_json
    from privbench.spec.load import validate_suite
    from privbench.spec.suite import expand

    require_verified(run_dir, what)
    path = Path(run_dir) / "suite.json"
    if not path.exists():
        raise PrivbenchError(f"{run_dir}: no suite.json; give a run folder written by "
                             "`privbench suite`")
    data = read_json(path)
    spec = validate_suite(data["spec"], data["source"])
    suite = Suite(spec=spec, source=data["source"], cells=expand(spec, data["source"]))
    return suite, load_cells(run_dir)


def results_document(suite: Suite, cells: list[CellResult]) -> dict[str, Any]:
    """The machine-readable results of a run.

    Args:
        suite: the run's suite; cells: its cells' results.
    Returns:
        results.json's content: suite name, source, privbench version, UTC time written, cells.
    """
    return {
        "suite": suite.spec.name,
        "source": suite.source,
        "privbench_version": privbench.__version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cells": [c.to_dict() for c in cells],
    }
