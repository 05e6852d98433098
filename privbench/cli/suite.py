"""`privbench suite`: run a suite (or resume it) with a live progress bar, then print its summary
table."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from privbench.errors import PrivbenchError


def writable_out(run_dir: Path) -> None:
    """Refuse an --out that cannot be created or written, before anything trains."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PrivbenchError(f"--out {run_dir}: cannot write there ({e.strerror or e}); choose "
                             "a folder you can write to") from None


def suite_command(args: argparse.Namespace, console: Console) -> int:
    """Run `privbench suite`: validate the options, run the suite's cells with progress, print the
    summary (and the gates when --policy is given) and the report's path.

    Args:
        args: the parsed command line; console: where progress and tables go.
    Returns:
        The exit code: 1 when a cell failed or the policy's verdict is FAIL, else 0.
    Raises:
        PrivbenchError: --workers below 1, --encrypt without a run key, --max-memory-gb not above 0,
            --address without --backend ray, or a spec that breaks the policy.
    """
    from privbench.governance.crypto import active_run_key, load_signing_key
    from privbench.spec.suite import load_suite

    if args.workers is not None and args.workers < 1:
        raise PrivbenchError(f"--workers = {args.workers}: must be at least 1")
    if args.encrypt and active_run_key() is None:
        raise PrivbenchError("--encrypt: no run key; give --key-file FILE or set $PRIVBENCH_KEY "
                             "(`privbench keygen --encryption FILE` writes one)")
    signing_key = load_signing_key(args.signing_key)
    if args.max_memory_gb is not None and not args.max_memory_gb > 0:
        raise PrivbenchError(f"--max-memory-gb = {args.max_memory_gb:g}: must be above 0")
    if args.address and args.backend != "ray":
        raise PrivbenchError(f"--address {args.address}: only the Ray backend takes an "
                             "address; add --backend ray or drop --address")
    suite = load_suite(args.suite, args.overrides, seed=args.seed)
    policy = None
    if args.policy is not None:
        from privbench.gates.policy import load_policy
        from privbench.gates.precheck import refuse_if_broken

        policy = load_policy(args.policy)
        refuse_if_broken(suite.cells, policy)
    from privbench.run.runner import default_run_dir, run_suite  # imports torch: after validation

    run_dir = args.out or default_run_dir(suite)
    writable_out(run_dir)
    labels = {c.key: c.label for c in suite.cells}
    options = {"encrypt": args.encrypt, "signing_key": signing_key,
               "show_private_text": args.show_private_text}
    where = {"backend": args.backend, "address": args.address,
             "max_memory_gb": args.max_memory_gb}

    def recompute(key: str, why: str) -> None:
        print(f"cell {labels[key]}: {why}; recomputing it instead of loading it", file=sys.stderr)

    if args.quiet:
        result = run_suite(suite, run_dir, workers=args.workers, policy=policy, **where,
                           on_event=lambda e: recompute(e[1], e[2]) if e[0] == "recompute"
                           else None, **options)
    else:
        console.print(f"[bold]{suite.spec.name}[/]: {len(suite.cells)} cells -> {run_dir}")
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console, transient=False)
        with progress:
            overall = progress.add_task("cells", total=len(suite.cells))
            rounds: dict[str, int] = {}

            def on_event(event: tuple) -> None:
                kind, key, payload = event
                if kind == "round":
                    done, total = payload
                    if key not in rounds:
                        rounds[key] = progress.add_task(f"  {labels[key]}", total=total)
                    progress.update(rounds[key], completed=done)
                elif kind == "done":
                    if key in rounds:
                        progress.remove_task(rounds.pop(key))
                    progress.advance(overall)
                elif kind == "recompute":
                    recompute(key, payload)

            result = run_suite(suite, run_dir, workers=args.workers, on_event=on_event,
                               policy=policy, **options, **where)
        print_summary(console, result)
    if result.gates is not None:
        from privbench.cli.checks import print_gates

        print_gates(console, result.gates)
    print(run_dir / "index.html")
    failed_gate = result.gates is not None and result.gates.verdict == "FAIL"
    return 1 if result.failed or failed_gate else 0


def print_summary(console: Console, result) -> None:
    """The run's table: claim, utility, the strongest membership attack, the audit's eps_LB and
    verdict, and each cell's status. Off a terminal (a pipe, a CI log) it is printed at its full
    width, never cut to `…`.

    Args:
        console: where to print; result: the finished RunResult.
    """
    from privbench.attacks.membership.metrics import fpr_metric_name
    from privbench.report.context import strongest, utility_row

    table = Table(title=f"{result.suite.spec.name} ({len(result.loaded)} cells loaded, "
                        f"{len(result.cells) - len(result.loaded)} run)")
    audited = any(c.metric("audit", "eps_lb") is not None for c in result.cells)
    columns = ["cell", "claimed ε", "δ", "accuracy", "MIA AUC", "TPR@1e-3",
               *(["ε_LB", "audit"] if audited else []), "status", "time"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("cell", "status") else "right",
                         no_wrap=True)
    for c in result.cells:
        if c.status != "ok":
            table.add_row(c.label, *[""] * (len(columns) - 3), f"[red]error: {c.error or ''}[/]",
                          f"{c.seconds:.1f}s")
            continue
        eps = c.claim["epsilon"]

        def val(m) -> str:
            return "—" if m is None else f"{m.value:.3f}"

        private = math.isfinite(eps)
        lb = c.metric("audit", "eps_lb")
        verdict = "—" if lb is None else lb.details.get("verdict", "—")
        colour = {"FAIL": "red", "PASS": "green"}.get(verdict, "default")
        audit = [val(lb), f"[{colour}]{verdict}[/]"] if audited else []
        auc, tpr = strongest(c, "auc"), strongest(c, fpr_metric_name(1e-3))
        health = c.health
        table.add_row(c.label, f"{eps:.3f}" if private else "∞ (no DP)",
                      f"{c.claim['delta']:.0e}" if private else "—",
                      utility_cell(utility_row(c)),
                      "—" if auc is None else f"{auc.value:.3f} ({auc.scorer})", val(tpr),
                      *audit, health if health == "ok" else f"[red]{health}[/]",
                      f"{c.seconds:.1f}s")
    if not console.is_terminal:
        natural = console.measure(table, options=console.options.update(max_width=100_000))
        console = Console(file=console.file, width=max(80, natural.maximum), color_system=None)
    console.print(table)


def utility_cell(row) -> str:
    """The summary's accuracy column: test accuracy, or next-token accuracy marked as such."""
    if row is None:
        return "—"
    return f"{row.value:.3f}" + (" (next token)" if row.metric == "next_token_accuracy" else "")
