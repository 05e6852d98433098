"""Per-round monitoring: each round's figures appended to a JSONL file as it finishes, with the
epsilon spent so far against the plan, and an alarm when spending runs ahead of the plan.

The plan is the planned mechanism (the calibrated noise multiplier at the planned sampling rate)
composed once per round, so after r of R rounds the plan allows the PLD epsilon of r such rounds
and reaches the target at round R. Spent epsilon is read from the round record when the
trainer hands over each round's executed DP event: the monitor composes those on a coarse
pessimistic PLD grid as they come. In the per-client settings (example level, local DP) a
client's epsilon composes only its own participations, so spent is the busiest client's, read
from the run's ledger: the figure the Claim certifies, not every round's. An alarm is recorded
when spent exceeds plan, or rounds exceed the plan.

A round costs the same at round 1,000 as at round 1: each distinct mechanism's PLD is built once
(`accounting.PLDComposer`), each round composes one more onto the running composition, and while
the executed rounds are the planned ones (the usual case) spent and plan are one composition,
whose epsilons after every round a run of a setting seen before reads from the accounting cache
(privbench/privacy/accounting_cache.py) instead of composing them again.
On resume the loop hands back the rounds its checkpoint holds (`restart`), so the file and the
spent epsilon continue exactly where the checkpoint left them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

import dp_accounting
from dp_accounting import rdp

from privbench.privacy import accounting, accounting_cache
from privbench.run.results import json_restore, json_safe
from privbench.spec.schema import CellSpec, TrainSpec

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

    def __init__(self, spec: CellSpec, train: TrainSpec | None = None,
                 n_clients: int | None = None):
        """Args:
            spec: the cell's spec (its privacy settings).
            train, n_clients: the train plan and the client count the trainer runs (an audit's
                canary clients join the federation with an expected cohort scaled to keep the
                real clients' rate: privbench.audit.canaries); default the spec's.
        """
        p, t = spec.privacy, spec.train if train is None else train
        clients = spec.data.clients if n_clients is None else n_clients
        self.rounds = t.rounds
        self.delta = p.delta
        self.target = p.epsilon
        self.neighbouring = p.neighbouring
        self.private = math.isfinite(self.target)
        self.per_round = (self.private and p.unit == "client" and p.setting == "central"
                          and t.sampling == "poisson" and not p.noise_schedule
                          and not p.adaptive_clip)
        # Per-client settings with one event per participation: a client's epsilon composes
        # its own participations, so the busiest client's is the Claim's (worst_client_event).
        self.per_client = (self.private and (p.unit == "example" or p.setting == "local")
                           and not p.noise_schedule and not p.adaptive_clip)
        self._eps: list[float] = []
        self._acc: accounting.PLDComposer | None = None
        self._round_event: dp_accounting.DpEvent | None = None
        if self.per_round:
            q = t.cohort / clients
            z = accounting.calibrate_noise_multiplier(self.target, self.delta, q, self.rounds,
                                                      p.neighbouring)
            self._round_event = accounting.poisson_gaussian_event(z, q, 1)
            self._acc = self._accountant()
            # the plan's epsilons are a pure function of the round's event: a run of a setting
            # seen before reads them all at once (privbench/privacy/accounting_cache.py)
            self._key = [accounting.event_to_dict(self._round_event), self.delta,
                         self.neighbouring, MONITOR_DISCRETIZATION, self.rounds]
            self._eps = list(accounting_cache.lookup("monitor_plan", self._key) or [])

    def _accountant(self) -> accounting.PLDComposer:
        return accounting.PLDComposer(self.neighbouring, MONITOR_DISCRETIZATION)

    @property
    def round_event(self) -> dp_accounting.DpEvent | None:
        """The planned mechanism of one round (None when there is no per-round plan)."""
        return self._round_event

    def epsilon_after(self, r: int) -> float:
        """Planned epsilon after `r` rounds (the target when no per-round plan exists)."""
        if not self.private:
            return math.inf
        if self._acc is None:
            return self.target
        while len(self._eps) < r:
            self._acc.compose(self._round_event)
            self._eps.append(self._acc.epsilon(self.delta, vectorised=True))
            if len(self._eps) == self.rounds:
                accounting_cache.store("monitor_plan", self._key, list(self._eps))
        return self._eps[r - 1] if r > 0 else 0.0


class RecordHook(Protocol):
    """What the federated loop calls as rounds finish (`trainers.fedavg`'s `on_record`)."""

    def __call__(self, record: dict[str, Any], event: Any = None) -> None:
        """Round `record` (the hook may add keys; they stay in the history) and the DP event
        the round executed (None without DP)."""

    def restart(self, rows: list[dict[str, Any]], events: list[Any],
                ledger: Any = None) -> None:
        """Before the first round the loop runs: the records and events of the rounds already
        done (a resumed checkpoint's; empty for a fresh run), and the run's `Ledger`, which
        records each round before the hook is called.

        Args:
            rows: the done rounds' records; events: their DpEvents; ledger: the run's Ledger.
        """


class BudgetMonitor:
    """Called with each round's record and executed DP event; adds the budget figures to the
    record itself (so they stay in the cell's history) and appends it to `path` at once.

    Args:
        path: the JSONL file of per-round rows (emptied now; `restart` refills it on resume).
        spec: the cell's spec (its privacy plan).
        train, n_clients: the train plan and client count the trainer runs (`BudgetPlan`):
            with an audit's canary clients the run's round is its own sampled Gaussian, whose
            plan the spent epsilon then follows.
    """

    def __init__(self, path: Path, spec: CellSpec, train: TrainSpec | None = None,
                 n_clients: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        from privbench.run.sealed import work_line_sealer  # [governance] sealed in an encrypted run

        self._sealer = work_line_sealer(self.path)
        self._lines = 0
        self.plan = BudgetPlan(spec, train, n_clients)
        self.alarms: list[dict[str, Any]] = []
        self._reset()

    def _reset(self) -> None:
        self._events: list[dp_accounting.DpEvent] = []
        self._on_plan = self.plan.round_event is not None  # spent is the plan's composition
        self._spent: accounting.PLDComposer | None = (None if self._on_plan
                                                      else self.plan._accountant())
        self._rdp: rdp.RdpAccountant | None = None
        self._spent_eps = 0.0
        self._ledger: Any = None
        self._busiest = 0  # the busiest client's participations composed into spent

    def _spend_busiest_client(self) -> None:
        """Compose the busiest client's participations since the last call onto spent."""
        count, events = self._ledger.busiest_client()
        for event in events[self._busiest:count]:
            self._spend(event)
        self._busiest = count

    def restart(self, rows: list[dict[str, Any]], events: list[Any],
                ledger: Any = None) -> None:
        """Continue after the rounds a checkpoint holds: rewrite their rows (as the history
        kept them) and compose their events again, in order, to the same spent epsilon.

        Args:
            rows: the records of the rounds already done.
            events: their executed run-level DP events.
            ledger: the run's `Ledger`; with it, per-client settings spend the busiest
                client's participations (what the Claim certifies) instead of every round.
        """
        self._reset()
        self._ledger = ledger if self.plan.per_client else None
        self.alarms = [{"round": int(r["round"]), "reason": r["alarm"]} for r in rows
                       if r.get("alarm")]
        if self._ledger is not None:
            self._spend_busiest_client()
        else:
            for event in events:
                if event is not None and self.plan.private:
                    self._spend(event)
        self._lines = 0
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(self._stored(row) for row in rows)

    def _spend(self, event: dp_accounting.DpEvent) -> None:
        """Compose one executed round's event onto the spent epsilon."""
        self._events.append(event)
        r = len(self._events)
        if (self._on_plan and r <= self.plan.rounds
                and _one(event) == _one(self.plan.round_event)):
            self._spent_eps = self.plan.epsilon_after(r)
            return
        if self._on_plan:  # the run left its plan: compose what ran so far on its own
            self._on_plan = False
            self._spent = self.plan._accountant()
            for e in self._events[:-1]:
                self._spent.compose(e)
        if self._rdp is None and self._spent is not None and accounting.PLDComposer.supports(
                event, self.plan.neighbouring):
            self._spent.compose(event)
            self._spent_eps = self._spent.epsilon(self.plan.delta, vectorised=True)
            return
        if self._rdp is None:  # an event PLD cannot take (fixed cohorts): RDP, composed alike
            self._rdp = rdp.RdpAccountant(
                neighboring_relation=accounting.NEIGHBOURING[self.plan.neighbouring])
            for e in self._events[:-1]:
                self._rdp.compose(accounting.rdp_convention(e, self.plan.neighbouring))
        self._rdp.compose(accounting.rdp_convention(event, self.plan.neighbouring))
        self._spent_eps = float(self._rdp.get_epsilon(self.plan.delta))

    def __call__(self, record: dict[str, Any], event: Any = None) -> None:
        r = int(record["round"])
        row = record
        if self.plan.private:
            if event is not None and self._ledger is not None:
                self._spend_busiest_client()  # per client: the Claim's worst client so far
            elif event is not None:  # spent: what the round actually executed, composed so far
                self._spend(event)
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
            f.write(self._stored(row))
            f.flush()

    def _stored(self, row: dict[str, Any]) -> str:
        """A row's line as written: plaintext JSON, or sealed (privbench.run.sealed.LineSealer)."""
        line = _line(row)
        if self._sealer is not None:
            line = self._sealer.seal_line(line.rstrip("\n"), self._lines) + "\n"
        self._lines += 1
        return line


def _one(event: Any) -> Any:
    """The event itself, for one self-composition of it (they account alike)."""
    if isinstance(event, dp_accounting.SelfComposedDpEvent) and event.count == 1:
        return event.event
    return event


def _line(row: dict[str, Any]) -> str:
    return json.dumps(json_safe(row), allow_nan=False) + "\n"


def read_rounds(path: Path) -> list[dict[str, Any]]:
    """The per-round rows written by a BudgetMonitor (an empty list when there is no file)."""
    from privbench.run.sealed import read_text  # opened with the run key in an encrypted run

    path = Path(path)
    if not path.exists():
        return []
    return [json_restore(json.loads(line)) for line in read_text(path).splitlines() if line]
