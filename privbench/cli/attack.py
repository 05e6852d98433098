"""`privbench attack`: attack a model trained elsewhere (a local Hugging Face causal LM, or a user's
own signals)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from privbench.errors import PrivbenchError


def attack_command(args: argparse.Namespace, console: Console) -> int:
    """Run `privbench attack`: membership attacks on a user's own model or losses.

    Printed as a table. It exists so that a model trained outside privbench is scored with the
    same attacks and metrics (AUC, TPR at fixed FPR, PPV at a 1e-2 prior) as a suite's cells.

    Args:
        args: the parsed command line (--members, --nonmembers, --model, --reference, --min-k,
            --out); console: where the table goes.
    Returns:
        The exit code, 0; the rows are also written as JSON to --out when given.
    Raises:
        PrivbenchError: --min-k outside (0, 1], or --reference without --model.
    """
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
