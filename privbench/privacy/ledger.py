"""The privacy ledger: an append-only JSON Lines record of every round's DP event, per run and per
client, that survives a crash and says, before a round runs, whether it would exceed the budget.

Each line is one JSON object, a "round" line: the round's run-level event, the realised cohort and
each participant's own event. A run that resumes from the checkpoint of round k first cuts the
ledger back to the size it had at round k (`truncate`; the checkpoint records it): the rounds after
it are run again with the same random streams and release exactly what they released before, so
the resumed ledger equals an uninterrupted run's, byte for byte. (Ledgers written before this
marked a restart with a "resume" line; they are still read.)

Appending a round costs the same at round 1,000 as at round 1: the file is never read back, the
participation counts and each client's events are kept as rounds arrive, and the budget check
composes one more round onto a running coarse composition (deciding exactly, as before, only
when that upper bound comes near the budget).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import dp_accounting

from privbench.privacy import accounting

# The budget check's fast upper bound: a pessimistic PLD grid that is a multiple of the Claim's
# 1e-4 grid, so its epsilon is never below the Claim's; near the budget the check decides on the
# Claim's own accounting.
BUDGET_CHECK_DISCRETIZATION = 3e-3
BUDGET_CHECK_MARGIN = 1e-3
# ... used below this epsilon only, where the Claim's grid (1e-4, or 1e-3 where RDP's looser
# estimate is above 10) divides the coarse one.
FAST_CHECK_UP_TO = 10.0


class PrivacyLedger:
    """Append-only ledger of executed DP events, with run-level and per-client epsilons.

    Args:
        path: the JSON Lines file (None: kept in memory only); an existing file is read.
        delta: the delta every epsilon is read at.
        neighbouring: "add_or_remove_one" or "replace_one".
    """

    def __init__(self, path: Path | None, delta: float, neighbouring: str) -> None:
        self.path = path
        self.delta = delta
        self.neighbouring = neighbouring
        # a ledger in an encrypted run's work folder is sealed line by line (privbench.run.sealed)
        from privbench.run.sealed import work_line_sealer

        self._sealer = work_line_sealer(path) if path is not None else None
        self._load()

    def _load(self) -> None:
        self.rounds: list[dict[str, Any]] = []
        self._reset_views()
        self._open_line = False  # the file ends inside a line a crash cut short
        self._lines = 0  # lines in the file (a cut-short last one included)
        if self.path is not None and self.path.exists():
            text = self.path.read_bytes()
            self._open_line = bool(text) and not text.endswith(b"\n")
            lines = text.decode().splitlines()
            self._lines = len(lines)
            for i, line in enumerate(lines):
                if self._sealer is not None:
                    if self._open_line and i == len(lines) - 1:
                        continue  # cut short by a crash, as below
                    line = self._sealer.open_line(line, i)
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    # a line cut short by a crash: its round had no checkpoint yet, so it ran
                    # again after it
                    continue
                self._replay(entry)

    def _reset_views(self) -> None:
        self._events: list[dp_accounting.DpEvent] = []
        self._counts: dict[int, int] = {}
        self._client_events: dict[int, list[dp_accounting.DpEvent]] = {}
        self._most: tuple[int, int] = (0, -1)  # (participations, client) of the busiest client
        self._coarse: accounting.PLDComposer | None = None
        self._coarse_failed = False

    def _replay(self, entry: dict[str, Any]) -> None:
        if entry["kind"] == "round":
            self.rounds.append(entry)
            event = accounting.event_from_dict(entry["event"])
            self._events.append(event)
            client_event = (None if entry.get("client_event") is None
                            else accounting.event_from_dict(entry["client_event"]))
            for c in entry["participants"]:
                self._counts[c] = self._counts.get(c, 0) + 1
                if self._counts[c] > self._most[0]:
                    self._most = (self._counts[c], c)
                if client_event is not None:
                    self._client_events.setdefault(c, []).append(client_event)
            if self._coarse is not None:
                self._coarse = self._coarse_with(self._coarse, event)
                self._coarse_failed = self._coarse is None
        elif entry["kind"] == "resume":  # ledgers written before `truncate` existed
            kept = [r for r in self.rounds if r["round"] <= entry["from_round"]]
            self.rounds = []
            self._reset_views()
            for r in kept:
                self._replay(r)

    @property
    def size(self) -> int:
        """The file's size in bytes (0 without a file): what a checkpoint records."""
        if self.path is None or not self.path.exists():
            return 0
        return self.path.stat().st_size

    def truncate(self, size: int) -> None:
        """Cut the file back to `size` bytes (a checkpoint's `size`) and read it again: the
        rounds after the checkpoint are dropped, as the resumed run executes them again."""
        if self.path is not None and self.path.exists():
            os.truncate(self.path, min(size, self.path.stat().st_size))
        self._load()

    def _append(self, entry: dict[str, Any]) -> None:
        self._replay(entry)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                if self._open_line:
                    f.write("\n")  # close a line a crash cut short
                    self._open_line = False
                text = json.dumps(entry, sort_keys=True)
                if self._sealer is not None:
                    text = self._sealer.seal_line(text, self._lines)
                f.write(text + "\n")
                self._lines += 1
                f.flush()

    def record_round(self, round_no: int, run_event: dp_accounting.DpEvent,
                     participants: list[int], client_event: dp_accounting.DpEvent | None,
                     **info: Any) -> None:
        """Append one executed round: the run's event and each participant's event.

        Args:
            round_no: the round; run_event: its DpEvent for the run; participants: its clients;
            client_event: each participant's own event (None: none kept for the clients);
            info: more keys to keep (e.g. clip).
        """
        self._append({
            "kind": "round", "round": round_no,
            "event": accounting.event_to_dict(run_event),
            "participants": participants,
            "client_event": None if client_event is None
            else accounting.event_to_dict(client_event),
            **info,
        })

    def record_entry(self, kind: str, **info: Any) -> None:
        """Append a line of another kind (the population, a client's withdrawal): it is kept
        in the file, truncated with the rounds after a checkpoint, and never enters the
        accounting.

        Args:
            kind: the line's kind; info: its keys.
        """
        self._append({"kind": kind, **info})

    def run_event(self, extra: dp_accounting.DpEvent | None = None) -> dp_accounting.DpEvent:
        """The composition of every recorded round's run-level event (plus `extra`)."""
        return accounting.compose_steps(self._events + ([extra] if extra is not None else []))

    def round_events(self) -> list[dp_accounting.DpEvent]:
        """Each recorded round's run-level event, in order."""
        return list(self._events)

    def client_events(self, client: int) -> list[dp_accounting.DpEvent]:
        """The events of the rounds `client` took part in, in order."""
        return list(self._client_events.get(client, []))

    def busiest_client(self) -> tuple[int, list[dp_accounting.DpEvent]]:
        """The most participations any client has, and that client's events (the first client
        to reach the count): the worst client when every participation carries one event."""
        count, client = self._most
        return count, self.client_events(client)

    def participations(self) -> dict[int, int]:
        """How many recorded rounds each client took part in."""
        return dict(self._counts)

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
        """True when composing `next_event` onto the recorded rounds exceeds `max_epsilon`.

        The answer is that of `epsilon(next_event)`, the Claim's accounting; a running coarse
        upper bound answers "no" first, in one composition, while it stays clear of the budget.

        Args:
            next_event: the round about to run; max_epsilon: the budget (inf: never exceeded).
        """
        if math.isinf(max_epsilon):
            return False
        bound = self._coarse_bound(next_event)
        if bound <= min(max_epsilon - BUDGET_CHECK_MARGIN, FAST_CHECK_UP_TO):
            return False
        return self.epsilon(next_event) > max_epsilon

    def _coarse_bound(self, next_event: dp_accounting.DpEvent) -> float:
        """An upper bound on `epsilon(next_event)` (inf where the PLD cannot compose it)."""
        if self._coarse is None and not self._coarse_failed:
            coarse: accounting.PLDComposer | None = accounting.PLDComposer(
                self.neighbouring, BUDGET_CHECK_DISCRETIZATION)
            for e in self._events:
                coarse = self._coarse_with(coarse, e)
            self._coarse, self._coarse_failed = coarse, coarse is None
        with_next = self._coarse_with(self._coarse, next_event, copy=True)
        return math.inf if with_next is None else with_next.epsilon(self.delta)

    def _coarse_with(self, coarse: accounting.PLDComposer | None, event: dp_accounting.DpEvent,
                     copy: bool = False) -> accounting.PLDComposer | None:
        """`coarse` with `event` composed on, or None where the PLD cannot compose it."""
        if coarse is None or not accounting.PLDComposer.supports(event, self.neighbouring):
            return None
        return (coarse.copy() if copy else coarse).compose(event)


def ledger_plaintext(path: Path) -> bytes:
    """A ledger file's lines as plaintext JSON Lines, opened when it is sealed line by line (a
    work folder of an encrypted run): what a finished cell stores (sealed whole there)."""
    from privbench.run.sealed import plaintext_lines

    return plaintext_lines(path)
