"""Where a cell's files live in a run folder: its stored folder, its work folder while it trains,
its live per-round file, and reading one stored file (sealed when the run is encrypted)."""

from __future__ import annotations

from pathlib import Path

from privbench.privacy.budget_monitor import ROUNDS_FILE
from privbench.run.sealed import read_bytes

RESULT_FILE = "result.json"


def cell_dir(run_dir: Path, key: str) -> Path:
    """A finished cell's folder, `run_dir/cells/<key>`.

    Args:
        run_dir: the run folder; key: the cell's content hash.
    """
    return run_dir / "cells" / key


def work_dir(run_dir: Path, key: str) -> Path:
    """A cell's checkpoints and privacy ledger while it trains (removed once it is stored).

    Args:
        run_dir: the run folder; key: the cell's content hash.
    Returns:
        `run_dir/work/<key>`.
    """
    return run_dir / "work" / key


def live_rounds_path(run_dir: Path, key: str) -> Path:
    """Per-round figures of a cell while it trains; moved into its folder when it finishes.

    Args:
        run_dir: the run folder; key: the cell's content hash.
    Returns:
        `run_dir/cells/.<key>.<ROUNDS_FILE>`, hidden beside the finished cells.
    """
    return run_dir / "cells" / f".{key}.{ROUNDS_FILE}"


def read_cell_file(run_dir: Path, key: str, name: str) -> bytes:
    """One stored file of a finished cell, opened with the run key when the run is encrypted.

    Args:
        run_dir: the run folder; key: the cell's content hash; name: the file's name in the cell.
    Returns:
        The file's plaintext bytes.
    """
    return read_bytes(cell_dir(run_dir, key) / name, run_dir=run_dir,
                      name=f"cells/{key}/{name}")
