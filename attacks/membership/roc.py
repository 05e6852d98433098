"""Membership-inference metrics from attack scores: ROC, AUC and TPR at low FPR with intervals.

Higher score means "member". TPR at a target FPR is read at the last ROC point whose FPR is at
or below the target, never interpolated and never the first point above it (REFERENCES.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from privbench.stats import auc_interval, clopper_pearson

DEFAULT_FPRS = (1e-1, 1e-2, 1e-3, 1e-4, 0.0)


@dataclass(frozen=True)
class TprAtFpr:
    """TPR at a target FPR, with the threshold used and the FPR actually achieved."""

    target_fpr: float
    tpr: float
    ci_low: float
    ci_high: float
    achieved_fpr: float
    threshold: float
    true_positives: int
    n_members: int
    n_nonmembers: int


def roc(member_scores: np.ndarray, nonmember_scores: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full ROC (fpr, tpr, thresholds) with every distinct threshold kept."""
    y = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    s = np.r_[member_scores, nonmember_scores]
    return roc_curve(y, s, drop_intermediate=False)


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    y = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    return float(roc_auc_score(y, np.r_[member_scores, nonmember_scores]))


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, target_fpr: float,
               alpha: float = 0.05) -> TprAtFpr:
    """TPR at the last ROC point with FPR <= target, and a Clopper-Pearson interval on it."""
    fpr, tpr, thresholds = roc(member_scores, nonmember_scores)
    ok = np.flatnonzero(fpr <= target_fpr + 1e-15)
    i = int(ok[-1])  # fpr is non-decreasing, so the last admissible point has the highest TPR
    n_pos, n_neg = len(member_scores), len(nonmember_scores)
    tp = round(float(tpr[i]) * n_pos)
    lo, hi = clopper_pearson(tp, n_pos, alpha)
    return TprAtFpr(target_fpr=target_fpr, tpr=float(tpr[i]), ci_low=lo, ci_high=hi,
                    achieved_fpr=float(fpr[i]), threshold=float(thresholds[i]),
                    true_positives=tp, n_members=n_pos, n_nonmembers=n_neg)


def log_roc_points(member_scores: np.ndarray, nonmember_scores: np.ndarray,
                   n_points: int = 60) -> dict[str, list[float]]:
    """A compact ROC for log-log plots: TPR read (as above) at log-spaced FPRs from 1/n to 1."""
    fpr, tpr, _ = roc(member_scores, nonmember_scores)
    lowest = 1.0 / max(len(nonmember_scores), 1)
    near_zero = fpr[(fpr > 0) & (fpr < lowest * 20)]
    grid = np.unique(np.r_[np.geomspace(lowest, 1.0, n_points), near_zero])
    at = np.searchsorted(fpr, grid + 1e-15, side="right") - 1
    return {"fpr": [float(f) for f in fpr[at]], "tpr": [float(t) for t in tpr[at]]}


def auc_with_interval(member_scores: np.ndarray, nonmember_scores: np.ndarray,
                      alpha: float = 0.05) -> tuple[float, float, float]:
    a = auc(member_scores, nonmember_scores)
    lo, hi = auc_interval(a, len(member_scores), len(nonmember_scores), alpha)
    return a, lo, hi
