"""`privbench report RUN_DIR`: render a verified run's report again."""

from __future__ import annotations

import argparse
from pathlib import Path

from privbench.errors import PrivbenchError


def report_command(args: argparse.Namespace) -> int:
    """`privbench report RUN_DIR`: render the report of a verified run again, into the run
    folder (sealed when the run is encrypted) or, with --out, into a plaintext file elsewhere."""
    from privbench.gates.evaluate import GateReport
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
