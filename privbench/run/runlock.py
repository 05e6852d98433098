"""One writer per run folder: an OS file lock held while a run (or a gate) writes into it.

The lock is `RUN/.lock`, locked with `fcntl.flock` (POSIX) or `msvcrt.locking` (Windows). The
operating system releases it when the process exits, however it exits, so a lock file left by a
crashed run does not block the next one: only a live process holding the lock does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from privbench.errors import PrivbenchError

LOCK_FILE = ".lock"


class RunLocked(PrivbenchError):
    """Another live process is writing into the run folder."""


def _try_lock(f: IO[str]) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def run_lock(run_dir: Path, what: str = "--out") -> Iterator[None]:
    """Hold the run folder's lock for the duration of the block.

    Args:
        run_dir: the run folder (created if missing).
        what: how the folder is named in the message (the CLI option or argument).

    Raises:
        RunLocked: another live process holds the lock (one line, with its pid).
        OSError: the folder cannot be created or written (the CLI turns it into one line).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as f:  # closing the file releases the lock
        if not _try_lock(f):
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise RunLocked(f"{what} {run_dir}: another privbench process (pid {holder}) is "
                            "writing into this run folder; wait for it to finish or choose "
                            "another folder")
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
