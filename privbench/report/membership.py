"""Report context for membership inference: log-log ROC per cell, metrics table, most vulnerable
records. Any scorer whose `auc` row carries a ROC
(privbench.attacks.membership.metrics.membership_rows) appears."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from privbench.attacks.membership.metrics import fpr_metric_name
from privbench.report.context import membership_attacks
from privbench.run.results import CellResult

TPR_COLUMNS = tuple(fpr_metric_name(f) for f in (1e-1, 1e-2, 1e-3, 1e-4, 0.0))
PPV_COLUMNS = ("ppv@prior=1e-02", "ppv@prior=1e-01")


def membership_context(cells: list[CellResult]) -> list[dict[str, Any]]:
    """One entry per finished cell with membership attacks: plot, table rows, vulnerable records."""
    out = []
    for cell in cells:
        if cell.status != "ok":
            continue
        attacks = membership_attacks(cell)
        if not attacks:
            continue
        with_roc = [a for a in attacks if "roc" in cell.metric(a, "auc").details]
        rows = []
        for scorer in attacks:
            top = next((m for m in cell.metrics if m.scorer == scorer
                        and m.metric.startswith("precision@top")), None)
            rows.append({
                "attack": scorer,
                "auc": cell.metric(scorer, "auc"),
                "tprs": [cell.metric(scorer, c) for c in TPR_COLUMNS],
                "ppvs": [cell.metric(scorer, c) for c in PPV_COLUMNS],
                "advantage": cell.metric(scorer, "advantage"),
                "calibrated": cell.metric(scorer, "calibrated_" + fpr_metric_name(1e-2)),
                "top": top,
            })
        out.append({"label": cell.label, "key": cell.key, "rows": rows,
                    "roc_svg": roc_svg(cell, with_roc) if with_roc else None,
                    "tpr_columns": TPR_COLUMNS})
    return out


def roc_svg(cell: CellResult, attacks: list[str]) -> str:
    """Log-log ROC of every attack on one cell, with the chance diagonal."""
    fig, ax = plt.subplots(figsize=(4.6, 4.0), constrained_layout=True)
    lowest = 1.0
    for scorer in attacks:
        roc = cell.metric(scorer, "auc").details["roc"]
        fpr, tpr = roc["fpr"], roc["tpr"]
        pts = [(f, t) for f, t in zip(fpr, tpr, strict=True) if f > 0 and t > 0]
        if not pts:
            continue
        lowest = min(lowest, pts[0][0])
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post",
                label=f"{scorer} (AUC {cell.metric(scorer, 'auc').value:.3f})")
    ax.plot([lowest, 1], [lowest, 1], color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lowest, 1)
    ax.set_ylim(lowest, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(cell.label, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]
