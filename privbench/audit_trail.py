"""The audit trail: a hash-chained, append-only JSONL log with one entry per suite run.

Each line is the canonical JSON (sorted keys, no spaces) of an entry: sequence number, time,
user, suite, run folder, spec hash, code version, data fingerprint, results hash, the previous
entry's hash and the entry's own hash (sha256 of the canonical JSON of every other field). Any
edit to a past line breaks its own hash or the next line's link, and `verify` names the first
entry that was edited or removed. Removing the newest entries cannot be seen from the log alone:
keep the last hash elsewhere (a CI artifact) and compare, as `verify --head HASH` does.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import privbench

LOG_NAME = "audit-trail.jsonl"
GENESIS = "0" * 64
FIELDS = ("seq", "time", "user", "suite", "run_dir", "spec_hash", "code_version",
          "data_fingerprint", "results_hash", "prev_hash")


def default_log_path(run_dir: Path) -> Path:
    """The log beside the run folders (reports/audit-trail.jsonl by default), or
    $PRIVBENCH_AUDIT_LOG."""
    env = os.environ.get("PRIVBENCH_AUDIT_LOG")
    return Path(env) if env else Path(run_dir).parent / LOG_NAME


def canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def entry_hash(body: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of an entry without its own hash."""
    return hashlib.sha256(canonical({k: body[k] for k in FIELDS}).encode()).hexdigest()


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def code_version() -> str:
    """privbench's version plus the git revision (and "+dirty" for uncommitted changes)."""
    here = Path(__file__).parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, cwd=here).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", ""
    return f"{privbench.__version__}+{rev or 'nogit'}{'.dirty' if dirty else ''}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def append_run(log: Path, *, suite: str, run_dir: Path, spec: dict[str, Any],
               data_fingerprints: list[str], results_path: Path) -> dict[str, Any]:
    """Append one entry for a finished run and return it."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    prev, seq = GENESIS, 0
    if log.exists():
        lines = [ln for ln in log.read_text(encoding="utf-8").splitlines() if ln]
        if lines:
            last = json.loads(lines[-1])
            prev, seq = last["hash"], last["seq"] + 1
    body = {
        "seq": seq,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "user": _user(),
        "suite": suite,
        "run_dir": str(run_dir),
        "spec_hash": hashlib.sha256(canonical(spec).encode()).hexdigest(),
        "code_version": code_version(),
        "data_fingerprint": hashlib.sha256(
            "\n".join(sorted(set(data_fingerprints))).encode()).hexdigest(),
        "results_hash": file_hash(results_path),
        "prev_hash": prev,
    }
    entry = {**body, "hash": entry_hash(body)}
    with open(log, "a", encoding="utf-8") as f:
        f.write(canonical(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return entry


@dataclass(frozen=True)
class Verification:
    """The outcome of checking a log: ok, or the first bad entry (1-based line) and why."""

    entries: int
    bad_line: int | None = None
    reason: str = ""
    head: str = GENESIS

    @property
    def ok(self) -> bool:
        return self.bad_line is None


def verify(log: Path, head: str | None = None) -> Verification:
    """Check every link of the chain; stop at the first entry that was edited or removed."""
    log = Path(log)
    if not log.exists():
        return Verification(0, 0, f"{log}: no audit log here")
    raw = log.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    else:
        return Verification(0, max(1, len(lines)), f"line {len(lines)} (entry {len(lines) - 1}) "
                            "does not end with a newline: it was edited or cut short")
    prev = GENESIS
    for i, line in enumerate(lines):
        where = f"line {i + 1} (entry {i})"
        try:
            entry = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return Verification(i, i + 1, f"{where} is not valid JSON: it was edited")
        if not isinstance(entry, dict) or set(entry) != {*FIELDS, "hash"}:
            return Verification(i, i + 1, f"{where} does not have the entry fields: it was edited")
        if canonical(entry).encode() != line:
            return Verification(i, i + 1, f"{where} is not in canonical form: it was edited")
        if entry_hash(entry) != entry["hash"]:
            return Verification(i, i + 1, f"{where} does not match its hash: it was edited")
        if entry["prev_hash"] != prev or entry["seq"] != i:
            if entry["seq"] > i:
                return Verification(i, i + 1, f"entry {i} was removed (line {i + 1} holds entry "
                                    f"{entry['seq']}, whose previous hash does not match)")
            return Verification(i, i + 1, f"{where}: its previous hash does not match the entry "
                                "before it: it was edited or an entry was removed")
        prev = entry["hash"]
    if head is not None and head != prev:
        return Verification(len(lines), len(lines) + 1,
                            f"the last entry's hash {prev[:16]}… is not the expected head "
                            f"{head[:16]}…: entries after line {len(lines)} were removed or "
                            "the log was replaced")
    return Verification(len(lines), None, "", prev)
