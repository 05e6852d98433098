"""The audit trail: a hash-chained, append-only JSONL log with one entry per suite run.

Each line is the canonical JSON (sorted keys, no spaces) of an entry: sequence number, time,
user, suite, run folder, spec hash, code version, data fingerprint, results hash, run manifest
hash (privbench.run.manifest.run_digest), the previous entry's hash and the entry's own hash (sha256
of the canonical JSON of every other field). Any edit to a past line breaks its own hash or the
next line's link, and `verify` names the first entry that was edited or removed. Removing the
newest entries cannot be seen from the log alone: keep the last hash elsewhere (a CI artifact)
and compare, as `verify --head HASH` does.

The log also vouches for the run folders: `verify` checks, for the newest entry of each run
folder that is still there, that its results.json and run manifest still have the logged hashes
and that every file matches the manifest (`verify_run_folder`), so editing a run's results and
rewriting its manifests to match is caught too. Entries written before run manifests existed
have no manifest hash; they are checked without it.
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
from privbench.errors import PrivbenchError
from privbench.run.manifest import check_run, file_hash, read_run_manifest, run_digest

LOG_NAME = "audit-trail.jsonl"
GENESIS = "0" * 64
FIELDS = ("seq", "time", "user", "suite", "run_dir", "spec_hash", "code_version",
          "data_fingerprint", "results_hash", "manifest_hash", "prev_hash")
# Entries written before run manifests: the same fields without manifest_hash.
LEGACY_FIELDS = tuple(f for f in FIELDS if f != "manifest_hash")
# A signed entry also holds its signer's public key (hashed with the rest) and, beside its hash,
# the Ed25519 signature of that hash.
SIGNED_FIELDS = (*FIELDS, "signer")
SHAPES = ({*FIELDS, "hash"}, {*LEGACY_FIELDS, "hash"}, {*SIGNED_FIELDS, "hash", "signature"})


def default_log_path(run_dir: Path) -> Path:
    """The log beside the run folders (reports/audit-trail.jsonl by default), or
    $PRIVBENCH_AUDIT_LOG."""
    env = os.environ.get("PRIVBENCH_AUDIT_LOG")
    return Path(env) if env else Path(run_dir).parent / LOG_NAME


def canonical(data: dict[str, Any]) -> str:
    """The one JSON text of `data` that is hashed and signed (sorted keys, ASCII, no NaN)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def _fields(entry: dict[str, Any]) -> tuple[str, ...]:
    if "signer" in entry:
        return SIGNED_FIELDS
    return FIELDS if "manifest_hash" in entry else LEGACY_FIELDS


def signed_message(entry_hash_hex: str) -> bytes:
    """What a trail entry's signature signs: a domain tag and the entry's hash."""
    return b"privbench-audit-entry/1\n" + entry_hash_hex.encode("ascii")


def signature_problem(entry: dict[str, Any], public_key: str | None) -> str:
    """'' when the entry's signature holds (by `public_key` when given), else why not.

    Args:
        entry: one parsed trail entry; public_key: the key it must be signed by (None: any
            valid signature, or none).
    """
    from privbench.governance.crypto import fingerprint, signature_ok

    if "signature" not in entry:
        return "" if public_key is None else "is not signed, though a public key was given"
    if not signature_ok(entry["signer"], signed_message(entry["hash"]), entry["signature"]):
        return "does not match its signature: it was forged or edited"
    if public_key is not None and entry["signer"] != public_key:
        return (f"is signed by key {fingerprint(entry['signer'])}, not the given public key "
                f"{fingerprint(public_key)}: it was forged or re-signed")
    return ""


def entry_hash(body: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of an entry without its own hash."""
    return hashlib.sha256(canonical({k: body[k] for k in _fields(body)}).encode()).hexdigest()


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
               data_fingerprints: list[str], results_path: Path,
               manifest_hash: str | None = None, signing_key: Any = None) -> dict[str, Any]:
    """Append one entry for a finished run and return it.

    Args:
        log: the audit log (created if missing).
        suite: the suite's name.
        run_dir: the run folder (logged as an absolute path, so `verify` finds it again).
        spec: the resolved suite spec (JSON-safe), hashed.
        data_fingerprints: fingerprints of the data each cell trained on.
        results_path: the run's results.json, hashed.
        manifest_hash: the run manifest's digest (privbench.run.manifest.run_digest).
        signing_key: an Ed25519 private key: the entry carries its public key and signature.

    Returns:
        The entry as written.
    """
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
        "run_dir": str(Path(run_dir).resolve()),
        "spec_hash": hashlib.sha256(canonical(spec).encode()).hexdigest(),
        "code_version": code_version(),
        "data_fingerprint": hashlib.sha256(
            "\n".join(sorted(set(data_fingerprints))).encode()).hexdigest(),
        "results_hash": file_hash(results_path),
        "manifest_hash": manifest_hash,
        "prev_hash": prev,
    }
    if signing_key is not None:
        from privbench.governance.crypto import public_key_text, sign

        body["signer"] = public_key_text(signing_key.public_key())
    entry = {**body, "hash": entry_hash(body)}
    if signing_key is not None:
        entry["signature"] = sign(signing_key, signed_message(entry["hash"]))
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
        """Whether every entry checked out (no bad line)."""
        return self.bad_line is None


def verify(log: Path, head: str | None = None, public_key: str | None = None) -> Verification:
    """Check every link of the chain and every signature; stop at the first bad entry.

    Args:
        log: the audit log.
        head: the last entry's hash as kept elsewhere, to detect removed tails.
        public_key: the run key's public key (base64, privbench.governance.crypto.load_public_key):
        every
            entry must be signed by it. Without it, a signed entry's signature is checked
            against the key it names, which a forger who re-signs with their own key passes.

    Returns:
        The Verification.
    """
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
        if not isinstance(entry, dict) or set(entry) not in SHAPES:
            return Verification(i, i + 1, f"{where} does not have the entry fields: it was edited")
        if canonical(entry).encode() != line:
            return Verification(i, i + 1, f"{where} is not in canonical form: it was edited")
        if entry_hash(entry) != entry["hash"]:
            return Verification(i, i + 1, f"{where} does not match its hash: it was edited")
        problem = signature_problem(entry, public_key)
        if problem:
            return Verification(i, i + 1, f"{where} {problem}")
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
    entries = [json.loads(line) for line in lines]
    latest = {}  # run folder -> its newest entry (older ones were superseded by a resume)
    for entry in entries:
        folder = entry_folder(entry, log)
        if folder is not None:
            latest[folder.resolve()] = entry
    for folder, entry in sorted(latest.items(), key=lambda item: item[1]["seq"]):
        problem = entry_mismatch(entry, folder)
        if problem:
            seq = entry["seq"]
            return Verification(seq, seq + 1, f"line {seq + 1} (entry {seq}): {problem}")
    return Verification(len(lines), None, "", prev)


def entry_folder(entry: dict[str, Any], log: Path) -> Path | None:
    """The run folder an entry names, where it still is: as logged, or beside the log.

    Args:
        entry: one trail entry (its "run_dir"); log: the trail's path.
    Returns:
        The folder holding results.json, or None when the entry names none or it is gone.
    """
    if not isinstance(entry.get("run_dir"), str) or not entry["run_dir"]:
        return None
    logged = Path(entry["run_dir"])
    for candidate in (logged, log.parent / logged.name):
        if (candidate / "results.json").is_file():
            return candidate
    return None


def entry_mismatch(entry: dict[str, Any], folder: Path) -> str:
    """'' when the run folder still is what the entry logged, else one line naming the file.

    Args:
        entry: the trail entry; folder: its run folder (from `entry_folder`).
    Returns:
        '' or the line naming results.json, manifest.json or the first file that differs.
    """
    results = folder / "results.json"
    if file_hash(results) != entry["results_hash"]:
        return (f"{results} differs from the results hash this entry logged: the results were "
                "edited after the run")
    if entry.get("manifest_hash") is None:
        return ""
    try:
        manifest = read_run_manifest(folder)
    except PrivbenchError as e:
        return str(e)
    if manifest is None:
        return f"{folder}/manifest.json is missing: the run's manifest was deleted"
    if run_digest(manifest) != entry["manifest_hash"]:
        return (f"{folder}/manifest.json differs from the manifest hash this entry logged: the "
                "run's files and manifest were rewritten")
    check = check_run(folder)
    return "" if check.ok else f"{folder}: {check.reason}"
