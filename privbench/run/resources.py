"""What a cell cost: the peak resident memory of the process that ran it, beside its wall time.

The peak is the kernel's high-water mark of the process's resident set (VmHWM), reset when the
cell starts (Linux `clear_refs` 5), so a worker process that runs several cells reports each
cell's own peak. Where the reset is not possible the process's lifetime peak (`ru_maxrss`) is
reported, an upper bound. `privbench.run.cell.run_cell` records the figure in the cell's result, so
every backend measures it the same way; it lands in the stored result, the results store and the
report's provenance.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def reset_peak_rss() -> bool:
    """Reset this process's resident-memory high-water mark.

    Returns:
        True when it was reset, False where it cannot be (not Linux, or not permitted).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """This process's resident-memory peak in MB (since the last reset, where there was one).

    Returns:
        The peak in MB (10^6 bytes).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return float(peak) / 1e6 if sys.platform == "darwin" else float(peak) * 1024 / 1e6
