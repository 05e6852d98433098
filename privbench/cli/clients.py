"""`privbench clients`: list and edit a client registry (privbench.governance.consent).

    privbench clients list FILE
    privbench clients add FILE [ID ...] [--count N] --text-version V [--scope S]
    privbench clients withdraw FILE ID [--round W] [--scope S]
    privbench clients device FILE ID [ID ...] --memory-mb M --flops F --lib torch=2.5 ...
                                     --model-hash H
    privbench clients needs SUITE          (what a client's device must declare)

Every edit appends a record (nothing is rewritten or removed), so the file stays the consent
history; a refused edit (an unknown client, a second withdrawal, a grant after a withdrawal) is
one line and exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from privbench.governance.consent import (
    DEFAULT_SCOPE,
    RegistryError,
    consent_status,
    empty_registry,
    grant,
    load_registry,
    save_registry,
    set_device,
    withdraw,
)


def add_clients_command(sub: argparse._SubParsersAction) -> None:
    """Register `privbench clients` and its actions."""
    clients = sub.add_parser("clients", help="list and edit a client registry (consent, "
                                             "withdrawals, device profiles)")
    actions = clients.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="the registry's clients and their consent")
    ls.add_argument("registry", type=Path)
    ls.add_argument("--scope", default=DEFAULT_SCOPE)
    add = actions.add_parser("add", help="record clients' consent (creates the file)")
    add.add_argument("registry", type=Path)
    add.add_argument("ids", type=int, nargs="*", help="client indices")
    add.add_argument("--count", type=int, default=None, help="clients 0..N-1")
    add.add_argument("--text-version", required=True, help="the consent text's version")
    add.add_argument("--scope", default=DEFAULT_SCOPE)
    wd = actions.add_parser("withdraw", help="record a withdrawal: never sampled after round W")
    wd.add_argument("registry", type=Path)
    wd.add_argument("id", type=int)
    wd.add_argument("--round", type=int, default=0,
                    help="the round during which the client withdrew (0: before the run)")
    wd.add_argument("--scope", default=DEFAULT_SCOPE)
    dev = actions.add_parser("device", help="declare clients' device profile")
    dev.add_argument("registry", type=Path)
    dev.add_argument("ids", type=int, nargs="+")
    dev.add_argument("--memory-mb", type=float, required=True)
    dev.add_argument("--flops", type=float, required=True, help="FLOP/s the device sustains")
    dev.add_argument("--lib", action="append", default=[], metavar="NAME=VERSION")
    dev.add_argument("--model-hash", required=True,
                     help="the model build the device runs (see `privbench clients needs`)")
    needs = actions.add_parser("needs", help="what a client must declare for a suite's model")
    needs.add_argument("suite", help="a built-in suite name or a TOML file")
    needs.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="FIELD=VALUE")


def run_clients_command(args: argparse.Namespace, console: Console) -> int:
    """Run one `privbench clients` action; returns the exit code.

    Args:
        args: the parsed command line (action, registry path, ids, scope, ...); console: where
            the `list` and `needs` tables go.
    Returns:
        The exit code, 0; `add`, `withdraw` and `device` save the registry first.
    Raises:
        RegistryError: `add` with neither client ids nor --count.
    """
    if args.action == "needs":
        return _needs(args, console)
    path = args.registry
    if args.action == "list":
        return _list(load_registry(path, str(path)), args.scope, console)
    registry = (load_registry(path, str(path)) if path.exists() or args.action != "add"
                else empty_registry())
    if args.action == "add":
        ids = list(args.ids) + (list(range(args.count)) if args.count else [])
        if not ids:
            raise RegistryError("clients add: give client ids or --count N")
        for c in ids:
            _non_negative(c)
            grant(registry, c, text_version=args.text_version, scope=args.scope)
        message = f"{path}: consent of {len(ids)} client(s) recorded ({args.text_version})"
    elif args.action == "withdraw":
        withdraw(registry, args.id, round_no=args.round, scope=args.scope)
        message = (f"{path}: client {args.id} withdrew in round {args.round}; never sampled "
                   f"from round {args.round + 1} on")
    else:
        profile = {"memory_mb": args.memory_mb, "flops_per_second": args.flops,
                   "libraries": dict(_lib(s) for s in args.lib), "model_hash": args.model_hash}
        for c in args.ids:
            set_device(registry, c, profile)
        message = f"{path}: device profile of {len(args.ids)} client(s) declared"
    save_registry(path, registry)
    print(message)
    return 0


def _non_negative(c: int) -> None:
    if c < 0:
        raise RegistryError(f"client {c}: ids are client indices, 0 or more")


def _lib(text: str) -> tuple[str, str]:
    name, sep, version = text.partition("=")
    if not sep or not name or not version:
        raise RegistryError(f"--lib {text!r}: expected NAME=VERSION, e.g. torch=2.5.1")
    return name.strip(), version.strip()


def _list(registry: dict, scope: str, console: Console) -> int:
    table = Table(title=f"clients ({scope})")
    for col in ("client", "consent", "text version", "granted", "withdrawn in round",
                "device"):
        table.add_column(col)
    for cid, entry in registry["clients"].items():
        s = consent_status(entry, scope)
        state = ("withdrawn" if s.withdrawn_in_round is not None
                 else "granted" if s.granted else "none")
        dev = entry.get("device")
        table.add_row(cid, state, s.text_version, s.granted_at,
                      "" if s.withdrawn_in_round is None else str(s.withdrawn_in_round),
                      "" if not dev else f"{dev.get('memory_mb')} MB, "
                      f"{dev.get('flops_per_second'):.3g} FLOP/s")
    console.print(table)
    return 0


def _needs(args: argparse.Namespace, console: Console) -> int:
    """Print a suite's model needs: memory, FLOPs per round, libraries and the model hash."""
    from privbench.governance.hooks import needs_of
    from privbench.governance.onboarding import MIN_VERSIONS
    from privbench.run.tasks import build_task
    from privbench.spec.suite import load_suite

    cell = load_suite(args.suite, args.overrides).cells[0]
    needs = needs_of(cell.spec, build_task(cell, Path(".")))
    print(f"memory_mb >= {needs.memory_bytes / 2**20:.3g}")
    print(f"flops_per_second >= {needs.round_flops / needs.max_round_seconds:.3g} "
          f"({needs.round_flops:.3g} FLOPs per round in {needs.max_round_seconds:g} s)")
    print("libraries: " + ", ".join(f"{k} >= {v}" for k, v in MIN_VERSIONS.items())
          + f" (torch {needs.server_torch.split('.')[0]}.x)")
    print(f"model_hash = {needs.model_hash}")
    return 0
