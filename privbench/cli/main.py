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
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from privbench.cli.attack import attack_command
from privbench.cli.keygen import keygen_command
from privbench.cli.listing import list_command
from privbench.cli.options import add_key_option, add_private_text_option, add_signing_option
from privbench.cli.report import report_command
from privbench.cli.suite import suite_command
from privbench.errors import PrivbenchError, os_error_line


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error printed as one line (exit code 2) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        """Exit with code 2 and one line (the message and a pointer to --help).

        Replaces argparse's usage block, which buries the message.
        """
        self.exit(2, f"{self.prog}: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    """The `privbench` command line: every subcommand and its options, in one parser."""
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


def main(argv: list[str] | None = None) -> int:
    """The `privbench` entry point: parse `argv`, run the command under the run key, return the exit
    code.

    A PrivbenchError is printed as its lines (no traceback) and exits with its own code; an OSError
    exits 2 with one line; Ctrl-C exits 130 (finished cells are kept for a resume).
    """
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
        return suite_command(args, console)
    if args.command == "list":
        return list_command(console)
    if args.command == "card":
        from privbench.privacy.card import print_cards

        return print_cards(args.run_dir)
    if args.command == "report":
        return report_command(args)
    if args.command == "keygen":
        return keygen_command(args)
    if args.command == "attack":
        return attack_command(args, console)
    if args.command == "clients":
        from privbench.cli.clients import run_clients_command

        return run_clients_command(args, console)
    from privbench.cli.checks import run_check_command  # gate, verify, compare

    return run_check_command(args, console)


