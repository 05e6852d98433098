"""Compare two runs metric by metric and flag regressions (`privbench compare RUN_A RUN_B`).

Cells are matched by label (the swept values), then by content hash. A change is a regression
when it goes the bad way for that metric (utility down, attack success or epsilon up) by more
than the tolerance and, where both rows carry intervals, B's interval lies entirely on the bad
side of A's value, so a change within measurement noise is not flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from privbench.gates.evaluate import load_cells
from privbench.run.results import CellResult, MetricRow

# Metrics where higher is better; every other metric (attack success, epsilon, exposure, loss,
# perplexity) is better lower.
HIGHER_IS_BETTER = {("utility", "accuracy"), ("utility", "next_token_accuracy")}
# Metrics that describe the setup rather than an outcome: shown but never flagged.
NEUTRAL = {("audit", "eps_ceiling")}


@dataclass(frozen=True)
class Change:
    """One metric of one cell in run A and run B."""

    cell: str
    scorer: str
    metric: str
    a: float | None
    b: float | None
    regression: bool

    @property
    def delta(self) -> float | None:
        """B's value minus A's (None when either run lacks the metric)."""
        if self.a is None or self.b is None:
            return None
        return self.b - self.a


def _worse(a: MetricRow, b: MetricRow, tolerance: float) -> bool:
    key = (a.scorer, a.metric)
    if key in NEUTRAL or not (math.isfinite(a.value) and math.isfinite(b.value)):
        return False
    sign = -1.0 if key in HIGHER_IS_BETTER else 1.0
    change = sign * (b.value - a.value)
    # A number computed to a stated precision (the claimed epsilon: the PLD grid) only changes
    # when it moves by more than that precision.
    precision = max(float(a.details.get("precision", 0.0)), float(b.details.get("precision", 0.0)))
    if change <= max(tolerance * max(abs(a.value), 1e-12), precision):
        return False
    if b.ci_low is None or b.ci_high is None:
        return True
    return (b.ci_low > a.value) if sign > 0 else (b.ci_high < a.value)


def compare_cells(cells_a: list[CellResult], cells_b: list[CellResult],
                  tolerance: float = 0.0) -> list[Change]:
    """Every metric of every matched cell, with regressions flagged.

    Args:
        cells_a, cells_b: the two runs' cells, matched by label, then by content hash.
        tolerance: the relative change allowed before a worse value is a regression.
    Returns:
        One Change per metric of each matched cell, plus "only in A"/"only in B" rows for
        unmatched cells and metrics.
    """
    by_a = {c.label: c for c in cells_a} | {c.key: c for c in cells_a}
    changes = []
    for cb in cells_b:
        ca = by_a.get(cb.label) or by_a.get(cb.key)
        if ca is None:
            changes.append(Change(cb.label, "(cell)", "only in B", None, None, False))
            continue
        rows_a = {(m.scorer, m.metric): m for m in ca.metrics}
        for mb in cb.metrics:
            ma = rows_a.pop((mb.scorer, mb.metric), None)
            if ma is None:
                changes.append(Change(cb.label, mb.scorer, mb.metric, None, mb.value, False))
                continue
            changes.append(Change(cb.label, mb.scorer, mb.metric, ma.value, mb.value,
                                  _worse(ma, mb, tolerance)))
        for (scorer, metric), ma in rows_a.items():
            changes.append(Change(cb.label, scorer, metric, ma.value, None, False))
    matched = {cb.label for cb in cells_b} | {cb.key for cb in cells_b}
    for ca in cells_a:
        if ca.label not in matched and ca.key not in matched:
            changes.append(Change(ca.label, "(cell)", "only in A", None, None, False))
    return changes


def compare_runs(run_a: Path, run_b: Path, tolerance: float = 0.0) -> list[Change]:
    """The Changes from run folder `run_a` to `run_b`: `compare_cells` on their loaded results.

    Args:
        run_a, run_b: run folders written by `privbench suite`; tolerance: as in `compare_cells`.
    Returns:
        The Changes, regressions flagged.
    """
    return compare_cells(load_cells(run_a), load_cells(run_b), tolerance)
