"""What a cell cost: the peak resident memory of the process that ran it, beside its wall time.

The peak is the kernel's high-water mark of the process's resident set (VmHWM), reset when the
cell starts (Linux `clear_refs` 5), so a worker process that runs several cells reports each
cell's own peak. Where the reset is not possible the process's lifetime peak (`ru_maxrss`) is
reported, an upper bound. The figure lands in the cell's stored result, the results store and
the report's provenance.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path

from privbench.cell import RESULT_FILE, cell_dir, run_cell
from privbench.manifest import write_cell_manifest
from privbench.results import CellResult, write_json
from privbench.suite import Cell


def reset_peak_rss() -> bool:
    """Reset this process's resident-memory high-water mark; False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """This process's resident-memory peak in MB (since the last reset, where there was one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return float(peak) / 1e6 if sys.platform == "darwin" else float(peak) * 1024 / 1e6


def run_measured(cell: Cell, run_dir: Path,
                 on_round: Callable[[int, int], None] | None = None) -> CellResult:
    """`run_cell`, with the cell's peak resident memory recorded in its result.

    Every backend runs cells through this function, so the figure is measured the same way
    everywhere. A finished cell's stored `result.json` and its manifest are rewritten with the
    figure (the folder is already in place: a crash in between leaves a cell whose files fail
    their hashes, which the next run recomputes).

    Args:
        cell: the cell.
        run_dir: the run folder the cell is stored in.
        on_round: called with (rounds done, rounds in all) after every round.

    Returns:
        The cell's result, `peak_rss_mb` set.
    """
    reset_peak_rss()
    result = run_cell(cell, run_dir, on_round=on_round)
    result.peak_rss_mb = round(peak_rss_mb(), 1)
    folder = cell_dir(Path(run_dir), cell.key)
    if result.status == "ok" and (folder / RESULT_FILE).exists():
        tmp = folder / f".{RESULT_FILE}.tmp-{os.getpid()}"
        write_json(tmp, result.to_dict())
        os.replace(tmp, folder / RESULT_FILE)
        write_cell_manifest(folder, cell.key)
    return result
