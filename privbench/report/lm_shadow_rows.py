"""Report rows of the shadow-LM membership attacks (attacks/membership/lm_shadow_attack.py):
LOSS, LiRA and RMIA pooled over the released model and every shadow, beside the blind baseline
on the same splits, with the counts and the intervals behind each TPR."""

from __future__ import annotations

from typing import Any

from privbench.run.results import CellResult

# (pooled row scorer, the name the report shows), in the order of the table
POOLED = (("pooled_loss", "LOSS"), ("pooled_lira_online", "LiRA (online)"),
          ("pooled_lira_offline", "LiRA (offline)"), ("pooled_rmia", "RMIA"),
          ("pooled_blind", "blind baseline (text only)"))


def lm_shadow_rows(cells: list[CellResult]) -> list[dict[str, Any]]:
    """One row per (cell, attack) of the cells that trained shadow LMs.

    Args:
        cells: the run's cell results.
    Returns:
        Rows with the cell label, attack, AUC, TPR at FPR 1e-2 and 1e-3, the counts and, when
        1e-3 is below what the counts resolve, the TPR at the smallest FPR they do.
    """
    rows = []
    for c in cells:
        if c.status != "ok":
            continue
        for scorer, name in POOLED:
            a = c.metric(scorer, "auc")
            if a is None:
                continue
            lowest = a.details.get("smallest_resolvable_fpr")
            at_lowest = None
            if lowest is not None and lowest > 1e-3:
                at_lowest = c.metric(scorer, f"tpr@{lowest:.0e}")
            rows.append({"label": c.label, "attack": name, "auc": a,
                         "tpr_1e2": c.metric(scorer, "tpr@1e-02"),
                         "tpr_1e3": c.metric(scorer, "tpr@1e-03"), "at_lowest": at_lowest,
                         "n_members": a.details.get("n_members"),
                         "n_nonmembers": a.details.get("n_nonmembers"),
                         "shadow_models": a.details.get("shadow_models"),
                         "shadow_seconds": a.details.get("shadow_seconds")})
    return rows
