"""CLI commands that check finished runs: `gate` (policy), `verify` (hashes), `compare`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from privbench.errors import PrivbenchError, os_error_line


def add_check_commands(sub: Any) -> None:
    """Add the `gate`, `verify` and `compare` subcommands to `sub`, the checks on a finished run."""
    from privbench.cli.options import add_key_option, add_signing_option

    gate = sub.add_parser("gate", help="check a finished run against a policy; exit 0 (PASS or "
                                       "WARN) or 1 (FAIL)")
    gate.add_argument("run", type=Path, help="a run folder written by `privbench suite`")
    gate.add_argument("--policy", type=Path, required=True, help="the policy TOML")
    gate.add_argument("--strict", action="store_true", help="exit 1 on WARN too")
    add_key_option(gate)
    add_signing_option(gate)
    verify = sub.add_parser("verify", help="recompute a run folder's hashes, or check the audit "
                                           "trail's chain; name the first file or entry that "
                                           "differs")
    verify.add_argument("log", type=Path, nargs="?", default=Path("reports/audit-trail.jsonl"),
                        help="a run folder, or the audit log (default reports/audit-trail.jsonl)")
    verify.add_argument("--head", default=None,
                        help="the last entry's hash as kept elsewhere, to detect removed tails")
    verify.add_argument("--public-key", type=Path, default=None,
                        help="the run key's public key (PREFIX.pub): every trail entry, the "
                             "run manifest and gates.json must be signed by it")
    add_key_option(verify)
    compare = sub.add_parser("compare", help="metric changes from RUN_A to RUN_B; exit 1 on a "
                                             "regression")
    compare.add_argument("run_a", type=Path)
    compare.add_argument("run_b", type=Path)
    compare.add_argument("--tolerance", type=float, default=0.0,
                         help="relative change allowed before a worse value is flagged")
    compare.add_argument("--all", action="store_true", help="list unchanged metrics too")
    add_key_option(compare)


def run_check_command(args: argparse.Namespace, console: Console) -> int:
    """Run the `gate`, `verify` or `compare` command named by `args.command`.

    Args:
        args: the parsed command line; console: where tables and verdicts go.
    Returns:
        The exit code: 1 on a FAIL verdict (or WARN with --strict), a failed verification or a
        regression; else 0.
    Raises:
        PrivbenchError: a missing run folder, a negative --tolerance, or a verdict that cannot be
            recorded.
    """
    if args.command == "gate":
        return _gate(args, console)
    if args.command == "verify":
        return _verify(args, console)
    return _compare(args, console)


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.4g}"


def print_gates(console: Console, report: Any) -> None:
    """The gate table: each gate, cell, threshold, measured value, margin and status.

    Args:
        console: where to print (off a terminal widened to at least 160 columns);
        report: the GateReport to show.
    """
    table = Table(title=f"gates: {report.policy}")
    for col in ("gate", "cell", "threshold", "measured", "margin", "status", "note"):
        table.add_column(col, justify="right" if col in ("measured", "margin") else "left",
                         no_wrap=col in ("gate", "measured", "margin", "status"))
    colours = {"pass": "green", "exempt": "green", "fail": "red", "warn": "yellow",
               "no data": "yellow"}
    for r in report.results:
        table.add_row(escape(r.gate), escape(r.cell), escape(r.threshold), _fmt(r.measured),
                      _fmt(r.margin), f"[{colours[r.status]}]{r.status}[/]", escape(r.note))
    if not console.is_terminal:  # a CI log: room for the whole table rather than 80 columns
        console = Console(width=max(console.width, 160))
    console.print(table)
    for r in report.failures:
        console.print(f"[red]FAIL[/] {escape(r.line())}", highlight=False, soft_wrap=True)
    console.print(f"verdict: [bold]{report.verdict}[/]", highlight=False)


def _gate(args: argparse.Namespace, console: Console) -> int:
    from privbench.gates.evaluate import evaluate, record_verdict
    from privbench.gates.policy import load_policy
    from privbench.governance.crypto import load_signing_key
    from privbench.run.runlock import run_lock
    from privbench.run.runner import load_run

    signing_key = load_signing_key(args.signing_key)
    policy = load_policy(args.policy)
    if not Path(args.run).is_dir():
        raise PrivbenchError(f"{args.run}: no such run folder; give a folder written by "
                             "`privbench suite`")
    try:
        with run_lock(args.run, what="run"):
            suite, cells = load_run(args.run, what="gate")
            report = evaluate(cells, policy)
            record_verdict(args.run, suite, cells, report, signing_key)
    except OSError as e:
        raise PrivbenchError(f"gate: cannot record the verdict in {args.run}: "
                             f"{os_error_line(e)}") from None
    print_gates(console, report)
    if report.verdict == "FAIL" or (args.strict and report.verdict == "WARN"):
        return 1
    return 0


def _verify(args: argparse.Namespace, console: Console) -> int:
    from privbench.governance.audit_trail import verify
    from privbench.governance.crypto import load_public_key

    public = load_public_key(args.public_key) if args.public_key is not None else None
    if args.log.is_dir():
        return _verify_run(args, console, public)
    if not args.log.exists():
        raise PrivbenchError(f"{args.log}: no such file or folder; give a run folder or the "
                             "audit log (reports/audit-trail.jsonl)")
    result = verify(args.log, head=args.head, public_key=public)
    if result.ok:
        signed = "; every entry signed by the given public key" if public else ""
        console.print(f"{args.log}: {result.entries} entries, chain intact; head {result.head}"
                      f"{signed}", highlight=False, soft_wrap=True)
        return 0
    console.print(f"[red]{escape(f'{args.log}: {result.reason}')}[/]", highlight=False,
                  soft_wrap=True)
    return 1


def _verify_run(args: argparse.Namespace, console: Console, public: str | None) -> int:
    """`privbench verify RUN_DIR`: every hash of the folder, its signatures, its audit-trail
    entry, and, for an encrypted run given its key, every sealed file's authentication."""
    from privbench.governance.crypto import active_run_key
    from privbench.governance.run_verification import verify_run_folder
    from privbench.governance.signatures import signer
    from privbench.run.sealed import authenticate_run, run_encryption

    if args.head is not None:
        raise PrivbenchError("--head: checks an audit log's last entry; give the log, not a "
                             "run folder")
    result = verify_run_folder(args.log, public_key=public)
    if not result.ok:
        console.print(f"[red]{escape(f'{args.log}: {result.reason}')}[/]", highlight=False,
                      soft_wrap=True)
        return 1
    trail = (f"audit-trail entry {result.entry} in {result.log} matches" if result.entry is not
             None else f"no audit-trail entry for it in {result.log}" if result.log else
             "no audit trail beside it (the manifests alone were checked)")
    key = signer(args.log)
    signed = (f"; signed by key {key}" + (" (the given public key)" if public else "")
              if key else "; not signed")
    sealed = ""
    if run_encryption(args.log) is not None:
        if active_run_key() is None:
            sealed = "; encrypted: sealed files not opened (no key; the hashes were checked)"
        else:
            opened, problem = authenticate_run(args.log)
            if problem:
                console.print(f"[red]{escape(f'{args.log}: {problem}')}[/]", highlight=False,
                              soft_wrap=True)
                return 1
            sealed = f"; encrypted: {opened} sealed files authenticate with the key"
    console.print(escape(f"{args.log}: {result.files} files match their hashes; {trail}"
                         f"{signed}{sealed}"), highlight=False, soft_wrap=True)
    return 0


def _compare(args: argparse.Namespace, console: Console) -> int:
    from privbench.gates.compare import compare_runs

    if args.tolerance < 0:
        raise PrivbenchError(f"--tolerance = {args.tolerance}: must be at least 0")
    changes = compare_runs(args.run_a, args.run_b, args.tolerance)
    table = Table(title=f"{args.run_a} -> {args.run_b}")
    for col in ("cell", "scorer", "metric", "A", "B", "change", ""):
        table.add_column(col, justify="right" if col in ("A", "B", "change") else "left")
    for ch in changes:
        if not args.all and not ch.regression and ch.delta == 0:
            continue
        delta = ch.delta
        table.add_row(escape(ch.cell), escape(ch.scorer), escape(ch.metric), _fmt(ch.a), _fmt(ch.b),
                      "—" if delta is None else f"{delta:+.4g}",
                      "[red]REGRESSION[/]" if ch.regression else "")
    console.print(table)
    regressions = [c for c in changes if c.regression]
    console.print(f"{len(regressions)} regression(s) in {len(changes)} metrics", highlight=False)
    return 1 if regressions else 0
