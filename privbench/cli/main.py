"""The command line: `privbench suite`, `list`, `card`, `report`, `attack`, `gate`, `verify`,
`compare`, `keygen`, `clients`.

Every command that reads a run folder takes `--key-file FILE` (else $PRIVBENCH_KEY) for an
encrypted run (privbench.governance.crypto, privbench.run.sealed); without the key it refuses in
one line.

Errors caused by input (a bad spec or option, a missing or unwritable path, a locked or
unverified run folder) print as one line each and exit with code 2, never with a traceback.
Exit code 1 means a check ran and said no: a gate FAIL, a regression, a run that does not verify.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from privbench.errors import PrivbenchError, os_error_line


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error printed as one line (exit code 2) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="privbench",
        description="Train with differential privacy, attack, and score leakage against the claim.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    suite = sub.add_parser("suite", help="run a suite (default: the built-in 'default')")
    suite.add_argument("suite", nargs="?", default=None,
                       help="a built-in suite name (see `privbench list`) or a TOML file")
    suite.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="FIELD=VALUE", help="override a spec field, e.g. privacy.epsilon=4")
    suite.add_argument("--out", type=Path, default=None,
                       help="run folder (default reports/<suite>-<time>); rerunning into the "
                            "same folder resumes")
    suite.add_argument("--seed", type=int, default=None, help="override the suite's seed")
    suite.add_argument("--workers", type=int, default=None,
                       help="parallel cells (default: the number of cores)")
    suite.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="where cells run: a local process pool (default) or Ray")
    suite.add_argument("--address", default=None, metavar="HOST:PORT",
                       help="the Ray cluster to run on (default RAY_ADDRESS, else a local Ray "
                            "started and stopped with the run)")
    suite.add_argument("--max-memory-gb", type=float, default=None, metavar="GB",
                       help="refuse, before training, a cell whose memory estimate exceeds "
                            "this (default: the suite's max_memory_gb)")
    suite.add_argument("--quiet", action="store_true", help="print only the report's path")
    suite.add_argument("--policy", type=Path, default=None,
                       help="a policy TOML: refuse a spec that breaks it before training, and "
                            "gate the finished run (exit 1 on FAIL)")
    suite.add_argument("--encrypt", action="store_true",
                       help="seal every stored file (weights, iterates, results, report) with "
                            "the run key (AES-256-GCM)")
    add_key_option(suite)
    add_signing_option(suite)
    add_private_text_option(suite)
    sub.add_parser("list", help="list built-in suites, data sets, models and attacks")
    card = sub.add_parser("card", help="print the privacy card of every model in a run folder")
    card.add_argument("run_dir", type=Path, help="a run folder (or one cell's folder)")
    add_key_option(card)
    report = sub.add_parser("report", help="render a finished run's HTML report again")
    report.add_argument("run_dir", type=Path, help="a run folder written by `privbench suite`")
    report.add_argument("--out", type=Path, default=None,
                        help="write the report to this file (plaintext, outside the run folder) "
                             "instead of RUN_DIR/index.html")
    add_key_option(report)
    add_private_text_option(report)
    keygen = sub.add_parser("keygen", help="write a signing key pair (PREFIX.key, PREFIX.pub) "
                                           "or, with --encryption, a run key file")
    keygen.add_argument("path", type=Path, help="PREFIX of the key pair, or the run key file")
    keygen.add_argument("--encryption", action="store_true",
                        help="write a run key (for --encrypt) instead of a signing pair")
    attack = sub.add_parser("attack", help="membership attacks on a model trained elsewhere")
    attack.add_argument("--model", type=Path, default=None,
                        help="a local Hugging Face causal LM folder; without it the files hold "
                             "per-example losses")
    attack.add_argument("--members", type=Path, required=True,
                        help="records the model trained on (.txt one per line, or .jsonl)")
    attack.add_argument("--nonmembers", type=Path, required=True,
                        help="records it did not train on, from the same distribution")
    attack.add_argument("--reference", type=Path, default=None,
                        help="a reference causal LM folder for the reference-ratio attack")
    attack.add_argument("--min-k", type=float, default=0.2, help="k of Min-K%% (default 0.2)")
    attack.add_argument("--out", type=Path, default=None, help="write the metric rows as JSON")
    from privbench.cli.checks import add_check_commands

    add_check_commands(sub)
    from privbench.cli.clients import add_clients_command  # [governance]

    add_clients_command(sub)
    return parser


def add_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-file", type=Path, default=None,
                        help="the run key of an encrypted run (default: $PRIVBENCH_KEY)")


def add_signing_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--signing-key", type=Path, default=None,
                        help="an Ed25519 private key (PREFIX.key from `privbench keygen`) to "
                             "sign with (default: $PRIVBENCH_SIGNING_KEY)")


def add_private_text_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--show-private-text", action="store_true",
                        help="show raw private text in the report (training sequences beside "
                             "their recoveries); hidden by default")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=False)
    try:
        from privbench.governance.crypto import load_run_key, use_key

        with use_key(load_run_key(getattr(args, "key_file", None))):
            return _dispatch(args, console)
    except PrivbenchError as e:
        for line in e.lines():
            print(line, file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a path that cannot be read or written: the user's to fix
        print(f"{args.command}: {os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; run the same command with --out to resume",
              file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace, console: Console) -> int:
    if args.command == "suite":
        return _cmd_suite(args, console)
    if args.command == "list":
        return _cmd_list(console)
    if args.command == "card":
        from privbench.privacy.card import print_cards

        return print_cards(args.run_dir)
    if args.command == "report":
        return _cmd_report(args)
    if args.command == "keygen":
        return _cmd_keygen(args)
    if args.command == "attack":
        return _cmd_attack(args, console)
    if args.command == "clients":
        from privbench.cli.clients import run_clients_command

        return run_clients_command(args, console)
    from privbench.cli.checks import run_check_command  # gate, verify, compare

    return run_check_command(args, console)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from privbench.governance.crypto import write_key_pair, write_run_key

    if args.encryption:
        print(f"{write_run_key(args.path)}: run key; keep it secret (pass it with --key-file "
              "or $PRIVBENCH_KEY)")
        return 0
    private, public = write_key_pair(args.path)
    print(f"{private}: signing key, keep it secret (--signing-key); {public}: public key, "
          "share it (verify --public-key)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """`privbench report RUN_DIR`: render the report of a verified run again, into the run
    folder (sealed when the run is encrypted) or, with --out, into a plaintext file elsewhere."""
    from privbench.gates.policy import GateReport
    from privbench.report.render import render_report, write_report
    from privbench.run.manifest import record_run
    from privbench.run.runlock import run_lock
    from privbench.run.runner import load_run
    from privbench.run.sealed import read_json

    run = args.run_dir
    if not Path(run).is_dir():
        raise PrivbenchError(f"{run}: no such run folder; give a folder written by "
                             "`privbench suite`")
    if args.out is not None and Path(args.out).resolve().is_relative_to(Path(run).resolve()):
        raise PrivbenchError(f"--out {args.out}: inside the run folder; a report written there "
                             "is unlisted (and plaintext): choose a path outside it, or omit "
                             "--out to rewrite RUN_DIR/index.html")
    with run_lock(run, what="run"):
        suite, cells = load_run(run, what="report")
        gates_path = Path(run) / "gates.json"
        gates = GateReport.from_dict(read_json(gates_path)) if gates_path.exists() else None
        if args.out is not None:
            Path(args.out).write_text(render_report(Path(run), suite, cells, gates,
                                                    args.show_private_text), encoding="utf-8")
            print(args.out)
            return 0
        path = write_report(Path(run), suite, cells, gates=gates,
                            show_private_text=args.show_private_text)
        record_run(run, files=("index.html",))
    print(path)
    return 0


def _writable_out(run_dir: Path) -> None:
    """Refuse an --out that cannot be created or written, before anything trains."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PrivbenchError(f"--out {run_dir}: cannot write there ({e.strerror or e}); choose "
                             "a folder you can write to") from None


def _cmd_suite(args: argparse.Namespace, console: Console) -> int:
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
        from privbench.gates.policy import load_policy, refuse_if_broken

        policy = load_policy(args.policy)
        refuse_if_broken(suite.cells, policy)
    from privbench.run.runner import default_run_dir, run_suite  # imports torch: after validation

    run_dir = args.out or default_run_dir(suite)
    _writable_out(run_dir)
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
        _summary(console, result)
    if result.gates is not None:
        from privbench.cli.checks import print_gates

        print_gates(console, result.gates)
    print(run_dir / "index.html")
    failed_gate = result.gates is not None and result.gates.verdict == "FAIL"
    return 1 if result.failed or failed_gate else 0


def _summary(console: Console, result) -> None:
    """The run's table: claim, utility, the strongest membership attack, the audit's eps_LB and
    verdict, and each cell's status. Off a terminal (a pipe, a CI log) it is printed at its full
    width, never cut to `…`."""
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
                      _utility_cell(utility_row(c)),
                      "—" if auc is None else f"{auc.value:.3f} ({auc.scorer})", val(tpr),
                      *audit, health if health == "ok" else f"[red]{health}[/]",
                      f"{c.seconds:.1f}s")
    if not console.is_terminal:
        natural = console.measure(table, options=console.options.update(max_width=100_000))
        console = Console(file=console.file, width=max(80, natural.maximum), color_system=None)
    console.print(table)


def _utility_cell(row) -> str:
    """The summary's accuracy column: test accuracy, or next-token accuracy marked as such."""
    if row is None:
        return "—"
    return f"{row.value:.3f}" + (" (next token)" if row.metric == "next_token_accuracy" else "")


def _cmd_list(console: Console) -> int:
    from rich.markup import escape

    from privbench.attacks import ATTACKS
    from privbench.attacks.inversion import INVERSION_ATTACKS
    from privbench.data.registry import DATA_SETS
    from privbench.models import MODELS
    from privbench.run.tasks import TASKS
    from privbench.scoring import SCORERS
    from privbench.spec.load import read_toml
    from privbench.spec.suite import builtin_suites
    from privbench.trainers.mechanisms import MECHANISMS

    table = Table(title="privbench: what is built in")
    table.add_column("kind")
    table.add_column("name")
    table.add_column("description")

    def row(*cells: str) -> None:  # "[tabular]" is text, not rich markup
        table.add_row(*map(escape, cells))

    for name, path in sorted(builtin_suites().items()):
        row("suite", name, str(read_toml(path).get("description", "")))
    for name, info in DATA_SETS.items():
        row("data set", name, f"{info.description} [{info.kind}]")
    for name in TASKS.names():
        row("task", name, TASKS.get(name).description)
    for name, (_, desc) in MODELS.items():
        row("model", name, desc)
    for name, entry in MECHANISMS.items():
        how = (f"privacy.setting = {entry.setting!r}" if entry.setting else
               f"privacy.unit = {entry.unit!r}" if entry.unit else entry.enabled_by or
               "privacy.epsilon = inf")
        row(entry.kind, name, f"{entry.description} [{how}"
            f"{', secagg.distributed_dp' if entry.secure_sum else ''}]")
    for name, scorer in SCORERS.items():
        row("scorer", name, f"{scorer.description} [{scorer.kind}; rows: "
            f"{', '.join(scorer.writes)}; {', '.join(scorer.contexts) or 'added by governance'}]")
    for name, cls in ATTACKS.items():
        row("attack", name, f"{cls.description} [surface: {cls.surface}]")
    for name, (desc, surface) in INVERSION_ATTACKS.items():
        row("inversion", name, f"{desc} [surface: {surface}]")
    console.print(table)
    return 0


def _cmd_attack(args: argparse.Namespace, console: Console) -> int:
    from privbench.integrations import external as ea
    from privbench.run.results import json_safe, write_json

    if not 0 < args.min_k <= 1:
        raise PrivbenchError(f"--min-k = {args.min_k}: must be in (0, 1], e.g. 0.2")
    if args.model is None:
        if args.reference is not None:
            raise PrivbenchError("--reference: needs --model (a reference ratio compares models)")
        rows = ea.audit_losses(ea.read_losses(args.members, "--members"),
                               ea.read_losses(args.nonmembers, "--nonmembers"))
    else:
        rows = ea.audit_language_model(
            args.model, ea.read_texts(args.members, "--members"),
            ea.read_texts(args.nonmembers, "--nonmembers"), reference_dir=args.reference,
            k=args.min_k)
    from privbench.attacks.membership.metrics import fpr_metric_name

    metrics = ("auc", *(fpr_metric_name(f) for f in (1e-1, 1e-2, 1e-3)), "ppv@prior=1e-02")
    table = Table(title=f"membership attacks on {args.model or 'user-supplied losses'}")
    table.add_column("attack")
    for m in metrics:
        table.add_column(m, justify="right")
    by = {(r.scorer, r.metric): r for r in rows}
    for scorer in dict.fromkeys(r.scorer for r in rows):
        table.add_row(scorer, *(f"{by[(scorer, m)].value:.3f}" for m in metrics))
    console.print(table)
    if args.out is not None:
        write_json(args.out, json_safe([r.__dict__ for r in rows]))
        print(args.out)
    return 0
