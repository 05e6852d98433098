"""One cell: a pure work unit (data, train, score), its artifacts stored under its content hash.

A finished cell's folder `cells/<key>/` holds `result.json`, `claim.json`, `weights.safetensors`,
`iterates.safetensors`, the card, ledger, observations and rounds, and `manifest.json` with the
SHA-256 of each of them (privbench.run.manifest). The folder appears atomically (written aside, then
renamed), so a run killed mid-cell leaves nothing half-written, and a rerun loads finished cells
whose files match their hashes instead of training them again.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save

from privbench.governance.hooks import governance_hooks
from privbench.privacy.budget_monitor import ROUNDS_FILE, BudgetMonitor
from privbench.privacy.card import CARD_FILE, privacy_card
from privbench.privacy.ledger import ledger_plaintext
from privbench.run.cell_paths import (
    RESULT_FILE,
    cell_dir,
    live_rounds_path,
    work_dir,
)
from privbench.run.manifest import check_cell_entry, write_cell_manifest
from privbench.run.observations import TrainedModel
from privbench.run.resources import peak_rss_mb, reset_peak_rss
from privbench.run.results import CellResult, json_safe, read_json, write_json
from privbench.run.sealed import plaintext_lines, write_bytes
from privbench.run.tasks import build_task, score
from privbench.spec.suite import Cell
from privbench.trainers import train_fedavg
from privbench.trainers.fedavg import LEDGER_FILE


def load_finished(run_dir: Path, key: str,
                  recorded: str | None = None) -> tuple[CellResult | None, str]:
    """The stored result of a cell that finished without error, if its files verify.

    Args:
        run_dir: the run folder.
        key: the cell's content hash.
        recorded: the SHA-256 of the cell's manifest as the run manifest recorded it, if it did.

    Returns:
        (result, "") for a finished cell whose every file matches its manifest (and the manifest
        the recorded hash); (None, "") when the cell was never stored; (None, reason) when it was
        stored but a file differs, is missing or truncated: the caller recomputes it.
    """
    folder = cell_dir(run_dir, key)
    if not folder.exists():
        return None, ""
    check = check_cell_entry(run_dir, key, recorded)
    if not check.ok:
        return None, check.reason
    result = CellResult.from_dict(read_json(folder / RESULT_FILE))
    if result.key != key:
        return None, f"cells/{key}/{RESULT_FILE} holds cell {result.key}: it was moved"
    return (result, "") if result.status == "ok" else (None, "")


def run_cell(cell: Cell, run_dir: Path,
             on_round: Callable[[int, int], None] | None = None) -> CellResult:
    """Train and score one cell, store its artifacts, and return its result.

    Every task takes this one path: its adapter and client data go to the one trainer, its
    scorers read the trained model. An exception while preparing or training becomes a result
    with status "error" and the message; it is not stored as finished, so the next run tries the
    cell again. A scorer that fails after training adds an "error" row and a history entry; the
    model and every other metric are kept. The result records the cell's wall time and the
    peak resident memory of the process while it ran (privbench.run.resources).

    Args:
        cell: the expanded cell (spec, key, label, axes); run_dir: the run folder.
        on_round: called with (rounds done, total rounds) for progress.
    Returns:
        The CellResult, status "ok" (stored in `run_dir/cells/<key>`) or "error" (not stored).
    """
    start = time.perf_counter()
    reset_peak_rss()
    spec = cell.spec
    try:
        torch.manual_seed(spec.seed)
        task = build_task(cell, run_dir)  # spec.task picks the adapter, data set and scorers
        governance = governance_hooks(spec, task)  # [governance] registry, personal layers
        monitor = BudgetMonitor(live_rounds_path(run_dir, cell.key), spec, task.train,
                                task.clients.n_clients)  # the run's plan (canary clients)
        trained = train_fedavg(task.adapter, task.clients, task.public, task.train,
                               spec.privacy, spec.seed, on_round=on_round,
                               work_dir=work_dir(run_dir, cell.key), secagg=spec.secagg,
                               on_record=monitor, optimizer=task.optimizer,
                               server_optimizer=task.server_optimizer,
                               engine=spec.model.engine, microbatch=task.microbatch,
                               **task.hooks, **governance.trainer)
        metrics, failures = score(cell.key, task.context(trained), task.scorers)
        result = CellResult(
            key=cell.key, label=cell.label, axes=cell.axes, status="ok",
            spec=spec.model_dump(), seconds=time.perf_counter() - start,
            claim=trained.claim.model_dump(), metrics=metrics,
            history=[*trained.history, *failures], data_fingerprint=task.fingerprint,
            peak_rss_mb=round(peak_rss_mb(), 1),
        )
        _store(run_dir, result, trained,
               governance.card(sum(1 for h in trained.history if "stopped" not in h)))
        return result
    except Exception as e:  # a failing cell must not stop the others
        return CellResult(
            key=cell.key, label=cell.label, axes=cell.axes, status="error",
            spec=spec.model_dump(), seconds=time.perf_counter() - start,
            error=f"{type(e).__name__}: {e}",
            history=[{"traceback": traceback.format_exc(limit=6)}],
            peak_rss_mb=round(peak_rss_mb(), 1),
        )


def _store(run_dir: Path, result: CellResult, trained: TrainedModel,
           card_sections: dict | None = None) -> None:
    """Write the cell folder aside, hash it, rename it into place. Every file goes through
    privbench.run.sealed under its final name, so an encrypted run stores them sealed."""
    final = cell_dir(run_dir, result.key)
    tmp = final.with_name(f".{result.key}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)

    def put(name: str, data: bytes) -> None:
        write_bytes(tmp / name, data, run_dir=run_dir, name=f"cells/{result.key}/{name}")

    def put_json(name: str, data: object) -> None:
        write_json(tmp / name, data, run_dir=run_dir, name=f"cells/{result.key}/{name}")

    put("weights.safetensors",
        save({k: v.contiguous() for k, v in trained.observations.final_params.items()},
             metadata={"experiment": result.key}))
    iterates = {f"round{r + 1:05d}.{name}": p.contiguous()
                for r, params in enumerate(trained.observations.iterates)
                for name, p in params.items()}
    if iterates:
        put("iterates.safetensors", save(iterates, metadata={"surface": "iterates"}))
    put_json("claim.json", trained.claim.model_dump(mode="json"))
    put_json(CARD_FILE, json_safe({**privacy_card(trained.claim, result.spec),
                                   **(card_sections or {})}))
    ledger = work_dir(run_dir, result.key) / LEDGER_FILE
    if ledger.exists():
        put(LEDGER_FILE, ledger_plaintext(ledger))
    put_json("observations.json", json_safe({"exposed": trained.observations.exposed}))
    live = live_rounds_path(run_dir, result.key)
    if live.exists():
        put(ROUNDS_FILE, plaintext_lines(live))
        live.unlink()
    put_json(RESULT_FILE, result.to_dict())
    write_cell_manifest(tmp, result.key)  # last: the hashes of every file above
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    shutil.rmtree(work_dir(run_dir, result.key), ignore_errors=True)


