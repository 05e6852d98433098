"""The backend contract: a backend runs cells and streams their events (round, done, ...) back to
the runner, which alone writes the run folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from privbench.spec.suite import Cell

# (kind, cell key, payload): ("round", key, (done, total)), ("done", key, CellResult) or
# ("recompute", key, why its stored files were not loaded)
Event = tuple[str, str, Any]


EventSink = Callable[[Event], None]


BACKENDS = ("local", "ray")


class Backend(Protocol):
    """Runs cells somewhere and reports their round events and finished results.

    A backend is used once: `submit` every cell still to run, then iterate `events` until it
    ends (it ends once every submitted cell has yielded its ("done", key, CellResult) event),
    then `close`. A cell whose task fails is yielded as a result with status "error", never
    raised, so the other cells still finish.
    """

    def submit(self, cells: Sequence[Cell], run_dir: Path) -> None:
        """Start running `cells`; their folders go to `run_dir/cells/<key>/`.

        Args:
            cells: the cells to run; run_dir: the run folder.
        """
        ...

    def events(self) -> Iterator[Event]:
        """("round", key, (done, total)) and ("done", key, CellResult) events as they happen."""
        ...

    def close(self) -> None:
        """Release what the backend started (processes, a local Ray instance)."""
        ...
