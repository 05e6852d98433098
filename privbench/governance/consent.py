"""The client registry: who may take part in training, under which consent, on which device.

A registry is one JSON file (`privbench clients` lists and edits it; a spec names it with
`clients.registry`). Each client (its index in the data set's partition, 0..data.clients-1) holds
an append-only list of consent records and, optionally, a declared device profile:

    {"format": "privbench-clients/1",
     "clients": {"0": {"consents": [{"action": "grant", "scope": "training",
                                     "time": "2026-12-03T09:00:00Z", "text_version": "v2"},
                                    {"action": "withdraw", "scope": "training",
                                     "time": "2026-12-03T10:00:00Z", "round": 3}],
                       "device": {"memory_mb": 512, "flops_per_second": 1e9,
                                  "libraries": {"torch": "2.5.1", "safetensors": "0.4.5"},
                                  "model_hash": "..."}}}}

A withdrawal made while round W ran (`"round": W`; 0 or absent: before the run) takes effect
from round W + 1: the client is never sampled again. Records are never edited or removed, so the
file is the consent history a team can show; a withdrawn client cannot grant again (it rejoins,
if ever, under a new id). JSON, not pickle; written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from privbench.errors import PrivbenchError

FORMAT = "privbench-clients/1"
DEFAULT_SCOPE = "training"


class RegistryError(PrivbenchError):
    """A registry file that cannot be read or an edit it refuses, as one line."""


@dataclass(frozen=True)
class ConsentStatus:
    """One client's consent for one scope, as its records say.

    Attributes:
        granted: the client granted consent for the scope (at some point).
        text_version: the version of the consent text it agreed to ("" without a grant).
        granted_at: the grant's time ("" without one).
        withdrawn_in_round: the round during which it withdrew (0: before the run), or None.
        withdrawn_at: the withdrawal's time ("" without one).
    """

    granted: bool
    text_version: str = ""
    granted_at: str = ""
    withdrawn_in_round: int | None = None
    withdrawn_at: str = ""

    def may_train(self, round_no: int) -> bool:
        """Whether the client may be sampled in round `round_no` (1-based)."""
        if not self.granted:
            return False
        return self.withdrawn_in_round is None or round_no <= self.withdrawn_in_round


def now() -> str:
    """The current UTC time as an ISO 8601 string (what a consent record stores)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def empty_registry() -> dict[str, Any]:
    """A consent registry with no clients, for `privbench clients add` on a new file."""
    return {"format": FORMAT, "clients": {}}


def load_registry(path: Path, field: str = "clients.registry") -> dict[str, Any]:
    """Read and check a registry file.

    Args:
        path: the JSON file.
        field: how its source is named in an error (a spec field or a CLI argument).
    Returns:
        The registry as a dict (format, clients).
    Raises:
        RegistryError: the file is missing, not JSON or not a registry (one line).
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{field} = {str(path)!r}: no such file; create it with "
                            "`privbench clients add FILE --count N`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegistryError(f"{field} = {str(path)!r}: not a readable JSON registry ({e})"
                            ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(
            raw.get("clients"), dict):
        raise RegistryError(f"{field} = {str(path)!r}: not a client registry (expected "
                            f"format {FORMAT!r} and a clients table)")
    for cid, entry in raw["clients"].items():
        if not cid.isdigit() or not isinstance(entry, dict) or not isinstance(
                entry.get("consents", []), list):
            raise RegistryError(f"{field} = {str(path)!r}: client {cid!r} is not a client "
                                "index with a list of consents")
    return raw


def save_registry(path: Path, registry: dict[str, Any]) -> None:
    """Write the registry atomically (aside, then renamed), clients in index order.

    Args:
        path: the registry file; registry: its content (format and clients).
    """
    path = Path(path)
    ordered = {"format": FORMAT, "clients": dict(sorted(registry["clients"].items(),
                                                         key=lambda kv: int(kv[0])))}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(ordered, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def registry_sha256(path: Path) -> str:
    """The SHA-256 of the registry file's bytes: what a cell's content hash and card record."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def consent_status(entry: dict[str, Any], scope: str = DEFAULT_SCOPE) -> ConsentStatus:
    """The consent a client's records give for `scope` (the first grant, the first withdrawal).

    Args:
        entry: a client's registry entry; scope: the consent scope.
    Returns:
        A ConsentStatus; not granted when the client has no grant for `scope`.
    """
    grant = next((c for c in entry.get("consents", []) if c.get("action") == "grant"
                  and c.get("scope") == scope), None)
    withdraw = next((c for c in entry.get("consents", []) if c.get("action") == "withdraw"
                     and c.get("scope") == scope), None)
    if grant is None:
        return ConsentStatus(False)
    return ConsentStatus(True, str(grant.get("text_version", "")), str(grant.get("time", "")),
                         None if withdraw is None else int(withdraw.get("round", 0)),
                         "" if withdraw is None else str(withdraw.get("time", "")))


def grant(registry: dict[str, Any], client: int, *, text_version: str,
          scope: str = DEFAULT_SCOPE, time: str | None = None) -> None:
    """Record client `client`'s consent for `scope` under consent text `text_version`.

    Args:
        registry: the loaded registry (changed in place); client: the client's index.
        text_version, scope, time: the consent text's version, its scope, the time (None: now).
    Raises:
        RegistryError: the client withdrew from that scope (it cannot grant again).
    """
    entry = registry["clients"].setdefault(str(client), {"consents": []})
    status = consent_status(entry, scope)
    if status.withdrawn_in_round is not None:
        raise RegistryError(f"client {client}: withdrew from {scope!r}; a withdrawal is final "
                            "(register the person again under a new client id)")
    if status.granted:
        return
    entry.setdefault("consents", []).append({"action": "grant", "scope": scope,
                                             "time": time or now(),
                                             "text_version": text_version})


def withdraw(registry: dict[str, Any], client: int, *, round_no: int,
             scope: str = DEFAULT_SCOPE, time: str | None = None) -> None:
    """Record that client `client` withdrew from `scope` while round `round_no` ran (0: before
    the run); it is never sampled from round `round_no + 1` on.

    Args:
        registry: the loaded registry (changed in place); client: the client's index.
        round_no, scope, time: the round it withdrew in, the scope, the time (None: now).
    Raises:
        RegistryError: the client is unknown, never granted, or already withdrew.
    """
    if round_no < 0:
        raise RegistryError(f"--round = {round_no}: must be 0 (before the run) or a round")
    entry = registry["clients"].get(str(client))
    status = consent_status(entry or {}, scope)
    if not status.granted:
        raise RegistryError(f"client {client}: has no consent for {scope!r} to withdraw")
    if status.withdrawn_in_round is not None:
        raise RegistryError(f"client {client}: already withdrew in round "
                            f"{status.withdrawn_in_round}")
    entry["consents"].append({"action": "withdraw", "scope": scope, "time": time or now(),
                              "round": round_no})


def set_device(registry: dict[str, Any], client: int, profile: dict[str, Any]) -> None:
    """Declare (or replace) client `client`'s device profile (privbench.governance.onboarding
    checks it).

    Args:
        registry: the loaded registry (changed in place); client: the client's index;
        profile: memory_mb, flops_per_second, libraries and model_hash.
    Raises:
        RegistryError: the client is not registered.
    """
    entry = registry["clients"].get(str(client))
    if entry is None:
        raise RegistryError(f"client {client}: not registered; add it first")
    entry["device"] = profile
