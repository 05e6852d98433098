"""Turn any membership attack's scores into metric rows: AUC and TPR at low FPR, with intervals,
PPV at realistic priors, per-slice AUC, the most vulnerable records, and thresholds calibrated on
shadow data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from privbench.attacks.membership.roc import (
    DEFAULT_FPRS,
    auc_with_interval,
    log_roc_points,
    roc,
    tpr_at_fpr,
)
from privbench.run.results import MetricRow
from privbench.stats import clopper_pearson

PPV_PRIORS = (1e-2, 1e-1)
PPV_AT_FPR = 1e-2  # the operating point PPV is read at
CALIBRATED_FPRS = (1e-1, 1e-2)
MAX_CLIENT_SLICES = 20


def fpr_metric_name(fpr: float) -> str:
    """`tpr@1e-03` style names, stable for any target FPR; `tpr@0` for FPR zero."""
    return "tpr@0" if fpr == 0 else f"tpr@{fpr:.0e}"


def membership_rows(experiment: str, scorer: str, surface: str, member_scores: np.ndarray,
                    nonmember_scores: np.ndarray,
                    fprs: tuple[float, ...] = DEFAULT_FPRS) -> list[MetricRow]:
    """AUC and TPR at each target FPR, each with its interval and the counts behind it; PPV at
    priors 1% and 10%; membership advantage. The AUC row carries a compact ROC for plots."""
    n_in, n_out = len(member_scores), len(nonmember_scores)
    a, lo, hi = auc_with_interval(member_scores, nonmember_scores)
    counts = {"n_members": n_in, "n_nonmembers": n_out}
    rows = [MetricRow(experiment, scorer, "auc", a, lo, hi, surface,
                      {**counts, "interval": "Hanley-McNeil 95%",
                       "roc": log_roc_points(member_scores, nonmember_scores)})]
    for fpr in fprs:
        t = tpr_at_fpr(member_scores, nonmember_scores, fpr)
        rows.append(MetricRow(
            experiment, scorer, fpr_metric_name(fpr), t.tpr, t.ci_low, t.ci_high, surface,
            {**counts, "achieved_fpr": t.achieved_fpr, "threshold": t.threshold,
             "interval": "Clopper-Pearson 95% on TPR",
             # With n non-members the smallest FPR above zero that can be measured is 1/n;
             # FPR 0 itself is always measured exactly.
             "resolvable": fpr == 0 or fpr >= 1.0 / n_out},
        ))
    rows += ppv_rows(experiment, scorer, surface, member_scores, nonmember_scores)
    advantage = max_advantage(member_scores, nonmember_scores)
    rows.append(MetricRow(experiment, scorer, "advantage", advantage, None, None, surface, counts))
    return rows


def ppv(tpr: float, fpr: float, prior: float) -> float:
    """Positive predictive value of "member" guesses when a fraction `prior` are members."""
    hits, false = prior * tpr, (1 - prior) * fpr
    return hits / (hits + false) if hits + false > 0 else 0.0


def ppv_rows(experiment: str, scorer: str, surface: str, member_scores: np.ndarray,
             nonmember_scores: np.ndarray, priors: Sequence[float] = PPV_PRIORS,
             at_fpr: float = PPV_AT_FPR) -> list[MetricRow]:
    """PPV at the operating point TPR@`at_fpr`; the interval combines the Clopper-Pearson bounds
    of TPR and FPR (low TPR with high FPR for the lower end)."""
    t = tpr_at_fpr(member_scores, nonmember_scores, at_fpr)
    n_out = len(nonmember_scores)
    fp = round(t.achieved_fpr * n_out)
    f_lo, f_hi = clopper_pearson(fp, n_out)
    return [MetricRow(experiment, scorer, f"ppv@prior={prior:.0e}",
                      ppv(t.tpr, t.achieved_fpr, prior),
                      ppv(t.ci_low, f_hi, prior), ppv(t.ci_high, f_lo, prior), surface,
                      {"prior": prior, "at_fpr": at_fpr, "tpr": t.tpr,
                       "achieved_fpr": t.achieved_fpr,
                       "interval": "from Clopper-Pearson 95% bounds on TPR and FPR"})
            for prior in priors]


def max_advantage(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """Membership advantage max_t (TPR - FPR) (Yeom et al. 2018)."""
    fpr, tpr, _ = roc(member_scores, nonmember_scores)
    return float(np.max(tpr - fpr))


def slice_rows(experiment: str, scorer: str, surface: str, scores: np.ndarray,
               member: np.ndarray, slices: dict[str, np.ndarray]) -> list[MetricRow]:
    """AUC per slice (`auc[class=3]`, `auc[client=7]`).

    `slices[name]` gives each record's slice value; -1 marks records that belong to every slice
    of that name (non-members have no client, so each client's members face all non-members).
    """
    rows = []
    for name, values in slices.items():
        values = np.asarray(values)
        for v in np.unique(values[values >= 0]):
            sel = (values == v) | (values < 0)
            s_in, s_out = scores[sel & member], scores[sel & ~member]
            if len(s_in) == 0 or len(s_out) == 0:
                continue
            a, lo, hi = auc_with_interval(s_in, s_out)
            rows.append(MetricRow(experiment, scorer, f"auc[{name}={int(v)}]", a, lo, hi, surface,
                                  {"slice": name, "value": int(v), "n_members": len(s_in),
                                   "n_nonmembers": len(s_out)}))
    return rows


def vulnerable_records_row(experiment: str, scorer: str, surface: str, scores: np.ndarray,
                           member: np.ndarray, record_ids: Sequence[str],
                           labels: np.ndarray, top: int = 10) -> MetricRow:
    """The `top` records the attack is most sure are members; value = the share that are."""
    order = np.argsort(-scores, kind="stable")[:top]
    hits = int(member[order].sum())
    lo, hi = clopper_pearson(hits, len(order))
    records = [{"record": record_ids[i], "label": int(labels[i]), "score": float(scores[i]),
                "member": bool(member[i])} for i in order]
    return MetricRow(experiment, scorer, f"precision@top{top}", hits / max(len(order), 1), lo, hi,
                     surface, {"records": records, "interval": "Clopper-Pearson 95%"})


def calibrated_threshold(reference_nonmember_scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold whose FPR on reference non-members is at most `fpr`."""
    s = np.sort(np.asarray(reference_nonmember_scores, dtype=np.float64))[::-1]
    allowed = int(np.floor(fpr * len(s) + 1e-9))
    if allowed >= len(s):
        return -np.inf
    return float(np.nextafter(s[allowed], np.inf))


def calibrated_rows(experiment: str, scorer: str, surface: str, member_scores: np.ndarray,
                    nonmember_scores: np.ndarray, reference_nonmember_scores: np.ndarray,
                    reference: str, fprs: Sequence[float] = CALIBRATED_FPRS) -> list[MetricRow]:
    """TPR and FPR the target actually gets at thresholds fixed on shadow data beforehand."""
    rows = []
    for fpr in fprs:
        t = calibrated_threshold(reference_nonmember_scores, fpr)
        tp, fp = int((member_scores >= t).sum()), int((nonmember_scores >= t).sum())
        n_in, n_out = len(member_scores), len(nonmember_scores)
        lo, hi = clopper_pearson(tp, n_in)
        f_lo, f_hi = clopper_pearson(fp, n_out)
        rows.append(MetricRow(
            experiment, scorer, f"calibrated_{fpr_metric_name(fpr)}", tp / n_in, lo, hi, surface,
            {"target_fpr": fpr, "threshold": t, "realised_fpr": fp / n_out,
             "realised_fpr_ci": [f_lo, f_hi], "calibrated_on": reference,
             "n_members": n_in, "n_nonmembers": n_out,
             "interval": "Clopper-Pearson 95% on TPR"}))
    return rows

