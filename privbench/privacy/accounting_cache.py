"""Accounting results that are pure functions of what they are computed from (a DpEvent, delta,
the neighbouring relation, a PLD grid, a calibration target), remembered in memory and on disk.

A calibrated noise multiplier, a Claim's PLD and RDP epsilons, the budget monitor's planned
epsilon after each round and the audit's epsilons and delta tables of the scaled claim cost from
milliseconds to seconds each and are asked for again by every run of the same privacy setting
(a sweep's cells, an audit's runs, a rerun). `memo(kind, key, compute)` answers from memory, else
from the content-addressed cache below `cache_root()` (privbench/run/cache_dir.py), else computes
and
stores the value in both. Each file is JSON (no pickle), named by the sha256 of its kind, its key
and a stamp of the code that computes it: the dp_accounting version and the sha256 of privbench's
accounting sources, so a change to either never reuses an old value. A file whose key does not
match, or that cannot be read, is recomputed; a cache that cannot be written is skipped. Values
round-trip exactly (Python's JSON floats are shortest-repr; non-finite floats are stored as
strings), so a cached epsilon equals a computed one to the last bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dp_accounting

from privbench.run.cache_dir import cache_root
from privbench.run.results import json_restore as _decode
from privbench.run.results import json_safe as _encode

# The sources whose code computes the cached values: a change to any invalidates the cache.
SOURCES = ("privacy/accounting.py", "privacy/calibration.py", "privacy/dp_events.py",
           "privacy/accounting_cache.py", "privacy/pld_compose.py",
           "privacy/pld_gaussian.py", "privacy/budget_monitor.py", "audit/family.py",
           "audit/fdp.py", "audit/scorer.py", "audit/design_memo.py", "audit/power.py",
           "audit/gauss_sum.py", "audit/gaussians.py", "audit/one_run_bound.py",
           "audit/gradient_canaries.py")  # in the privbench package
FOLDER = "accounting"
MEMORY_LIMIT = 8192  # entries kept in memory before it is emptied (values are small)

_memory: dict[str, dict[str, Any]] = {}  # kind -> digest -> value
_stamp: str | None = None
_MEMOS: list[Any] = []  # functools caches of the accounting modules (forgotten_with_memory)


def stamp() -> str:
    """The code's stamp: the dp_accounting version and a hash of privbench's accounting sources.

    Returns:
        A hex string, computed once per process.
    """
    global _stamp
    if _stamp is None:
        here = Path(__file__).parent.parent  # the privbench package
        digest = hashlib.sha256(dp_accounting.__version__.encode()
                                if hasattr(dp_accounting, "__version__") else b"")
        for name in SOURCES:
            path = here / name
            digest.update(name.encode())
            digest.update(path.read_bytes() if path.exists() else b"")
        _stamp = digest.hexdigest()[:16]
    return _stamp


def _address(kind: str, key: Any) -> tuple[str, str]:
    text = json.dumps({"kind": kind, "key": _encode(key), "stamp": stamp()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32], text


def _path(kind: str, digest: str) -> Path:
    return cache_root() / FOLDER / kind / f"{digest}.json"


def lookup(kind: str, key: Any) -> Any | None:
    """The stored value for `key`, from memory or disk; None when it is not stored.

    Args:
        kind: the kind of value ("calibration", "pld_epsilon", ...): a folder of the cache.
        key: a JSON-ready description of everything the value depends on.
    Returns:
        The value as stored (tuples come back as lists), or None.
    """
    digest, text = _address(kind, key)
    if digest in _memory.get(kind, {}):
        return _memory[kind][digest]
    try:
        entry = json.loads(_path(kind, digest).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("address") != text:
        return None  # another key behind the same name: never trust it
    value = _decode(entry["value"])
    _remember(kind, digest, value)
    return value


def store(kind: str, key: Any, value: Any) -> None:
    """Remember `value` for `key` in memory and on disk (atomically; skipped if unwritable).

    Args:
        kind, key: as for `lookup`.
        value: JSON-ready (floats, strings, lists, dicts; non-finite floats allowed).
    """
    digest, text = _address(kind, key)
    _remember(kind, digest, value)
    path = _path(kind, digest)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"address": text, "value": _encode(value)},
                                  allow_nan=False))
        os.replace(tmp, path)
    except OSError:  # a read-only or broken cache: the value is only remembered in memory
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def memo(kind: str, key: Any, compute: Callable[[], Any]) -> Any:
    """`compute()` for `key`, computed once: from memory, else disk, else computed and stored.

    Args:
        kind, key: as for `lookup`.
        compute: computes the value (an exception it raises propagates; nothing is stored).
    Returns:
        The value (as stored: tuples come back as lists).
    """
    value = lookup(kind, key)
    if value is None:
        value = _decode(_encode(compute()))  # what a later lookup would return
        store(kind, key, value)
    return value


def _remember(kind: str, digest: str, value: Any) -> None:
    held = _memory.setdefault(kind, {})
    if len(held) >= MEMORY_LIMIT:
        held.clear()
    held[digest] = value


def clear_memory(*kinds: str) -> None:
    """Forget the values held in memory (the disk cache stays): a fresh process's view.

    Args:
        kinds: the kinds to forget; none named: every kind, and the per-process memos of
            privbench/privacy/accounting.py and privbench/privacy/pld_compose.py (calibrations,
            PLDs) too.
    """
    for kind in kinds or list(_memory):
        _memory.pop(kind, None)
    if not kinds:
        for memoised in _MEMOS:
            memoised.cache_clear()


def forgotten_with_memory(*memoised: Any) -> None:
    """Register per-process memos (functools caches) that `clear_memory()` empties too; the
    accounting modules register theirs, so this module imports none of them."""
    _MEMOS.extend(memoised)
