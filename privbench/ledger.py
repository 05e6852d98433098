"""The privacy ledger: an append-only JSON Lines record of every round's DP event, per run and per
client, that survives a crash and says, before a round runs, whether it would exceed the budget.

Each line is one JSON object. "round" lines carry the round's run-level event, the realised cohort
and each participant's own event; a "resume" line marks that the run restarted from the checkpoint
of an earlier round (the lines after it replace the rounds the checkpoint did not hold; the
replayed rounds reuse the same random streams, so they release exactly what was released before).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import dp_accounting

from privbench import accounting


class PrivacyLedger:
    """Append-only ledger of executed DP events, with run-level and per-client epsilons."""

    def __init__(self, path: Path | None, delta: float, neighbouring: str) -> None:
        self.path = path
        self.delta = delta
        self.neighbouring = neighbouring
        self.rounds: list[dict[str, Any]] = []
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    # a line cut short by a crash: its round had no checkpoint yet, so it ran
                    # again after the "resume" line that follows
                    continue
                self._replay(entry)

    def _replay(self, entry: dict[str, Any]) -> None:
        if entry["kind"] == "round":
            self.rounds.append(entry)
        elif entry["kind"] == "resume":
            self.rounds = [r for r in self.rounds if r["round"] <= entry["from_round"]]

    def _append(self, entry: dict[str, Any]) -> None:
        self._replay(entry)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                if f.tell() and not self.path.read_bytes().endswith(b"\n"):
                    f.write("\n")  # close a line a crash cut short
                f.write(json.dumps(entry, sort_keys=True) + "\n")
                f.flush()

    def mark_resume(self, from_round: int) -> None:
        """Record that the run restarts after `from_round` (later lines are superseded)."""
        self._append({"kind": "resume", "from_round": from_round})

    def record_round(self, round_no: int, run_event: dp_accounting.DpEvent,
                     participants: list[int], client_event: dp_accounting.DpEvent | None,
                     **info: Any) -> None:
        """Append one executed round: the run's event and each participant's event."""
        self._append({
            "kind": "round", "round": round_no,
            "event": accounting.event_to_dict(run_event),
            "participants": participants,
            "client_event": None if client_event is None
            else accounting.event_to_dict(client_event),
            **info,
        })

    def run_event(self, extra: dp_accounting.DpEvent | None = None) -> dp_accounting.DpEvent:
        """The composition of every recorded round's run-level event (plus `extra`)."""
        events = [accounting.event_from_dict(r["event"]) for r in self.rounds]
        return accounting.compose_steps(events + ([extra] if extra is not None else []))

    def client_events(self, client: int) -> list[dp_accounting.DpEvent]:
        return [accounting.event_from_dict(r["client_event"]) for r in self.rounds
                if r.get("client_event") is not None and client in r["participants"]]

    def participations(self) -> dict[int, int]:
        """How many recorded rounds each client took part in."""
        out: dict[int, int] = {}
        for r in self.rounds:
            for c in r["participants"]:
                out[c] = out.get(c, 0) + 1
        return out

    def epsilon(self, extra: dp_accounting.DpEvent | None = None) -> float:
        """The run-level epsilon at the ledger's delta (PLD, with the noted fallbacks)."""
        event = self.run_event(extra)
        if isinstance(event, dp_accounting.NoOpDpEvent):
            return 0.0
        return accounting.epsilon_with_fallback(event, self.delta, self.neighbouring)[0]

    def client_epsilon(self, client: int) -> float:
        """One client's epsilon from the events of the rounds it took part in."""
        events = self.client_events(client)
        if not events:
            return 0.0
        event = accounting.compose_steps(events)
        return accounting.epsilon_with_fallback(event, self.delta, self.neighbouring)[0]

    def would_exceed(self, next_event: dp_accounting.DpEvent, max_epsilon: float) -> bool:
        """True when composing `next_event` onto the recorded rounds exceeds `max_epsilon`."""
        if math.isinf(max_epsilon):
            return False
        return self.epsilon(next_event) > max_epsilon
