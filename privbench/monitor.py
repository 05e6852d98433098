"""Per-round monitoring: each round's figures appended to a JSONL file as it finishes, with the
epsilon spent so far against the plan, and an alarm when spending runs ahead of the plan.

The plan is the planned mechanism (the calibrated noise multiplier at the planned sampling rate)
composed once per round, so after r of R rounds the plan allows the PLD epsilon of r such rounds
and reaches the target at round R. Spent epsilon is read from the round record when the trainer's
trainer hands over each round's executed DP event: the monitor composes those on a coarse
pessimistic PLD grid as they come. An alarm is recorded when spent exceeds plan, or rounds exceed
the plan.
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
    """The planned epsilon after each round: the calibrated mechanism composed round by round.

    Exact for plain client-level DP-FedAvg with Poisson sampling and one noise level; for other
    plans (schedules, adaptive clipping, fixed cohorts, example level, local DP) only the target
    itself is the plan, checked against what was spent.
    """

    def __init__(self, spec: CellSpec):
        p, t = spec.privacy, spec.train
        self.rounds = t.rounds
        self.delta = p.delta
        self.target = p.epsilon
        self.neighbouring = p.neighbouring
        self.private = math.isfinite(self.target)
        self.per_round = (self.private and p.unit == "client" and p.setting == "central"
                          and t.sampling == "poisson" and not p.noise_schedule
                          and not p.adaptive_clip)
        self._eps: list[float] = []
        self._acc: pld.PLDAccountant | None = None
        if self.per_round:
            q = t.cohort / spec.data.clients
            z = accounting.calibrate_noise_multiplier(self.target, self.delta, q, self.rounds,
                                                      p.neighbouring)
            self._round_event = accounting.poisson_gaussian_event(z, q, 1)
            self._acc = self._accountant()

    def _accountant(self) -> pld.PLDAccountant:
        return pld.PLDAccountant(accounting.NEIGHBOURING[self.neighbouring],
                                 value_discretization_interval=MONITOR_DISCRETIZATION)

    def epsilon_after(self, r: int) -> float:
        """Planned epsilon after `r` rounds (the target when no per-round plan exists)."""
        if not self.private:
            return math.inf
        if self._acc is None:
            return self.target
        while len(self._eps) < r:
            self._acc.compose(self._round_event)
            self._eps.append(float(self._acc.get_epsilon(self.delta)))
        return self._eps[r - 1] if r > 0 else 0.0


class RoundMonitor:
    """Called with each round's record and executed DP event; adds the budget figures to the
    record itself (so they stay in the cell's history) and appends it to `path` at once."""

    def __init__(self, path: Path, spec: CellSpec):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self.plan = BudgetPlan(spec)
        self._spent = self.plan._accountant() if self.plan.private else None
        self._spent_eps = 0.0
        self.alarms: list[dict[str, Any]] = []

    def __call__(self, record: dict[str, Any], event: Any = None) -> None:
        r = int(record["round"])
        row = record
        if self.plan.private and self._spent is not None:
            if event is not None:  # spent: what the round actually executed, composed so far
                self._spent.compose(event)
                self._spent_eps = float(self._spent.get_epsilon(self.plan.delta))
            planned = self.plan.epsilon_after(min(r, self.plan.rounds))
            spent = self._spent_eps
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
    from privbench.sealed import read_text  # opened with the run key in an encrypted run

    path = Path(path)
    if not path.exists():
        return []
    return [json_restore(json.loads(line)) for line in read_text(path).splitlines() if line]
