"""A run folder checked against the audit trail: its entry found, every stored file's hash and the
manifest compared, and commands that read a run refused when it does not verify."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from privbench.errors import PrivbenchError
from privbench.governance.audit_trail import (
    default_log_path,
    entry_folder,
    entry_mismatch,
    signature_problem,
)
from privbench.run.manifest import check_run


@dataclass(frozen=True)
class RunVerification:
    """The outcome of `verify_run_folder`: ok, or the first file that differs and why."""

    files: int
    reason: str = ""
    entry: int | None = None  # the audit-trail entry that vouches for the run, if found
    log: Path | None = None

    @property
    def ok(self) -> bool:
        """Whether every file matched (no reason given)."""
        return not self.reason


def verify_run_folder(run_dir: Path, log: Path | None = None,
                      public_key: str | None = None) -> RunVerification:
    """Recompute every hash of a run folder, check its signatures, then its audit-trail entry.

    Args:
        run_dir: the run folder.
        log: the audit log (default: the one beside the run folder, or $PRIVBENCH_AUDIT_LOG).
        public_key: the run key's public key (base64): the run manifest and gates.json must be
            signed by it (privbench.governance.signatures), and so must the trail entry when there
            is one.

    Returns:
        The RunVerification. Without a log, or without an entry for this folder in it, only the
        manifests are checked (`entry` is None).
    """
    run_dir = Path(run_dir)
    from privbench.governance.signatures import check_signatures

    check = check_run(run_dir)
    if not check.ok:
        return RunVerification(check.files, check.reason)
    problem = check_signatures(run_dir, public_key)
    if problem:
        return RunVerification(check.files, problem)
    log = Path(log) if log is not None else default_log_path(run_dir)
    if not log.is_file():
        return RunVerification(check.files)
    entry = None
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            candidate = json.loads(line)
        except json.JSONDecodeError:
            continue
        folder = entry_folder(candidate, log) if isinstance(candidate, dict) else None
        if folder is not None and folder.resolve() == run_dir.resolve():
            entry = candidate
    if entry is None:
        return RunVerification(check.files, log=log)
    problem = entry_mismatch(entry, run_dir)
    if not problem:
        bad = signature_problem(entry, public_key)
        problem = bad and f"its entry {bad}"
    return RunVerification(check.files, problem and f"{problem} (audit-trail entry "
                           f"{entry['seq']} in {log})", entry["seq"], log)


def require_verified(run_dir: Path, what: str) -> None:
    """Refuse, in one line, a run folder that does not verify.

    Args:
        run_dir: the run folder.
        what: who refuses, for the message (e.g. "gate").

    Raises:
        PrivbenchError: the folder does not exist or does not verify.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PrivbenchError(f"{run_dir}: no such run folder; give a folder written by "
                             "`privbench suite`")
    result = verify_run_folder(run_dir)
    if not result.ok:
        raise PrivbenchError(f"{run_dir}: the run does not verify: {result.reason}; {what} "
                             "refuses it (run the suite again into a new folder)")
