"""Turn any membership attack's scores into metric rows: AUC and TPR at low FPR, with intervals."""

from __future__ import annotations

import numpy as np

from privbench.results import MetricRow
from privbench.roc import DEFAULT_FPRS, auc_with_interval, roc, tpr_at_fpr


def fpr_metric_name(fpr: float) -> str:
    """`tpr@1e-03` style names, stable for any target FPR."""
    return f"tpr@{fpr:.0e}"


def membership_rows(experiment: str, scorer: str, surface: str, member_scores: np.ndarray,
                    nonmember_scores: np.ndarray,
                    fprs: tuple[float, ...] = DEFAULT_FPRS) -> list[MetricRow]:
    """AUC and TPR at each target FPR, each with its interval and the counts behind it."""
    n_in, n_out = len(member_scores), len(nonmember_scores)
    a, lo, hi = auc_with_interval(member_scores, nonmember_scores)
    counts = {"n_members": n_in, "n_nonmembers": n_out}
    rows = [MetricRow(experiment, scorer, "auc", a, lo, hi, surface,
                      {**counts, "interval": "Hanley-McNeil 95%"})]
    for fpr in fprs:
        t = tpr_at_fpr(member_scores, nonmember_scores, fpr)
        rows.append(MetricRow(
            experiment, scorer, fpr_metric_name(fpr), t.tpr, t.ci_low, t.ci_high, surface,
            {**counts, "achieved_fpr": t.achieved_fpr, "threshold": t.threshold,
             "interval": "Clopper-Pearson 95% on TPR",
             # With n non-members the smallest FPR above zero that can be measured is 1/n.
             "resolvable": fpr >= 1.0 / n_out},
        ))
    advantage = max_advantage(member_scores, nonmember_scores)
    rows.append(MetricRow(experiment, scorer, "advantage", advantage, None, None, surface, counts))
    return rows


def max_advantage(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """Membership advantage max_t (TPR - FPR) (Yeom et al. 2018)."""
    fpr, tpr, _ = roc(member_scores, nonmember_scores)
    return float(np.max(tpr - fpr))
