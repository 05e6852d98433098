"""Scorers: functions that read a trained cell and return metric rows.

Each scorer sees the same `CellContext` and decides from the cell's spec whether it applies.
New scorers (attacks, audits, utility measures) are added to `privbench.scorers.SCORERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from privbench.data import SplitData
from privbench.partition import ClientShard
from privbench.results import MetricRow
from privbench.suite import Cell
from privbench.trained import TrainedModel

if TYPE_CHECKING:
    from privbench.audit.canaries import CanarySet


@dataclass
class CellContext:
    """Everything a scorer may read about one trained cell."""

    cell: Cell
    data: SplitData
    shards: list[ClientShard]
    trained: TrainedModel
    canaries: CanarySet | None = None  # planted by the audit (privbench.audit.canaries)
    run_dir: Path | None = None  # where cached work (e.g. shadow models) may be stored

    @property
    def key(self) -> str:
        return self.cell.key


Scorer = Callable[[CellContext], list[MetricRow]]
