"""Per-round monitoring: each round's figures appended to a JSONL file as it finishes, with the
epsilon spent so far against the plan, and an alarm when spending runs ahead of the plan.

The plan is the planned mechanism (the calibrated noise multiplier at the planned sampling rate)
composed once per round, so after r of R rounds the plan allows the PLD epsilon of r such rounds
and reaches the target at round R. Spent epsilon is read from the round record when the trainer's
ledger writes one ("epsilon_spent", and "epsilon_planned" if the trainer plans differently);
otherwise it is accounted from the rounds that ran, which is what the trainer executes. An alarm
is recorded when spent exceeds plan, or rounds exceed the plan.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dp_accounting import pld

from privbench import accounting
from privbench.results import json_restore, json_safe
from privbench.spec import CellSpec

ROUNDS_FILE = "rounds.jsonl"
# Relative slack before spent-vs-plan raises an alarm (PLD grids round at about this level).
ALARM_TOLERANCE = 1e-3
# A pessimistic PLD grid coarse enough to account every round as it ends (about 10 ms a round;
# within 0.1% of the claim's finer grid, and never below it).
MONITOR_DISCRETIZATION = 3e-3


class BudgetPlan:
    """The planned epsilon after each round: the calibrated mechanism composed round by round."""

    def __init__(self, spec: CellSpec):
        self.rounds = spec.train.rounds
        self.delta = spec.privacy.delta
        self.target = spec.privacy.epsilon
        self.private = math.isfinite(self.target)
        self._eps: list[float] = []
        self._acc: pld.PLDAccountant | None = None
        if self.private:
            q = spec.train.cohort / spec.data.clients
            z = accounting.calibrate_noise_multiplier(self.target, self.delta, q, self.rounds,
                                                      spec.privacy.neighbouring)
            self._round_event = accounting.poisson_gaussian_event(z, q, 1)
            self._acc = pld.PLDAccountant(
                accounting.NEIGHBOURING[spec.privacy.neighbouring],
                value_discretization_interval=MONITOR_DISCRETIZATION)

    def epsilon_after(self, r: int) -> float:
        """Planned epsilon after `r` rounds (inf without DP)."""
        if not self.private or self._acc is None:
            return math.inf
        while len(self._eps) < r:
            self._acc.compose(self._round_event)
            self._eps.append(float(self._acc.get_epsilon(self.delta)))
        return self._eps[r - 1] if r > 0 else 0.0


class RoundMonitor:
    """Called with each round's record; adds the budget figures to the record itself (so they
    stay in the cell's history) and appends it to `path` at once."""

    def __init__(self, path: Path, spec: CellSpec):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self.plan = BudgetPlan(spec)
        self.alarms: list[dict[str, Any]] = []

    def __call__(self, record: dict[str, Any]) -> None:
        r = int(record["round"])
        row = record
        if self.plan.private:
            planned = float(record["epsilon_planned"]) if "epsilon_planned" in record else (
                self.plan.epsilon_after(min(r, self.plan.rounds)))
            spent = (float(record["epsilon_spent"]) if "epsilon_spent" in record
                     else self.plan.epsilon_after(r))
            row["epsilon_planned"], row["epsilon_spent"] = planned, spent
            reason = None
            if r > self.plan.rounds:
                reason = f"round {r} is past the {self.plan.rounds} planned rounds"
            elif spent > planned * (1 + ALARM_TOLERANCE):
                reason = (f"spent ε {spent:.4g} runs ahead of the plan's {planned:.4g} "
                          f"after round {r}")
            if reason:
                row["alarm"] = reason
                self.alarms.append({"round": r, "reason": reason})
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(json_safe(row), allow_nan=False) + "\n")
            f.flush()


def read_rounds(path: Path) -> list[dict[str, Any]]:
    """The per-round rows written by a RoundMonitor (an empty list when there is no file)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json_restore(json.loads(line)) for line in path.read_text().splitlines() if line]
