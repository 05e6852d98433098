"""Membership metrics: TPR read at the last ROC point with FPR at or below the target."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from privbench.attacks.membership.metrics import membership_rows
from privbench.attacks.membership.roc import tpr_at_fpr
from privbench.stats import clopper_pearson


def test_tpr_is_read_at_the_last_point_at_or_below_the_target_fpr():
    # 10 non-members: FPR moves in steps of 0.1. Members ranked so the ROC is easy to follow.
    nonmembers = np.arange(10, dtype=float)  # 0..9
    members = np.array([9.5, 9.4, 8.5, 8.4, 8.3, 7.5, 2.0, 1.0])
    # Threshold 9.4 accepts 2 members and no non-member: FPR 0, TPR 2/8.
    # Threshold 9 accepts one non-member (FPR 0.1) and still 2 members; 8.3 gives FPR 0.1, TPR 5/8.
    at_0 = tpr_at_fpr(members, nonmembers, 0.0)
    assert (at_0.tpr, at_0.achieved_fpr) == (2 / 8, 0.0)
    at_01 = tpr_at_fpr(members, nonmembers, 0.1)
    assert (at_01.tpr, at_01.achieved_fpr) == (5 / 8, 0.1)
    # A target between two ROC points uses the lower point, never the one above the target.
    at_015 = tpr_at_fpr(members, nonmembers, 0.15)
    assert at_015.achieved_fpr <= 0.15 and at_015.tpr == 5 / 8
    at_02 = tpr_at_fpr(members, nonmembers, 0.2)
    assert (at_02.tpr, at_02.achieved_fpr) == (6 / 8, 0.2)


def test_tpr_interval_is_clopper_pearson_on_the_member_count():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(1, 1, 500), rng.normal(0, 1, 500)
    t = tpr_at_fpr(members, nonmembers, 0.01)
    assert (t.ci_low, t.ci_high) == clopper_pearson(t.true_positives, 500)
    assert t.ci_low <= t.tpr <= t.ci_high


def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.30850, abs=1e-5)
    lo, hi = clopper_pearson(5, 10)
    assert (lo, hi) == (pytest.approx(0.18709, abs=1e-5), pytest.approx(0.81291, abs=1e-5))


def test_membership_rows_report_auc_with_interval_and_resolution():
    rng = np.random.default_rng(1)
    members, nonmembers = rng.normal(0.5, 1, 300), rng.normal(0, 1, 300)
    rows = {r.metric: r for r in membership_rows("e", "loss", "final_model", members, nonmembers)}
    want = roc_auc_score(np.r_[np.ones(300), np.zeros(300)], np.r_[members, nonmembers])
    assert rows["auc"].value == pytest.approx(want)
    assert rows["auc"].ci_low < want < rows["auc"].ci_high
    assert rows["tpr@1e-01"].details["resolvable"] is True
    assert rows["tpr@1e-03"].details["resolvable"] is False  # 300 non-members cannot show 1e-3
    assert 0 < rows["advantage"].value < 1
