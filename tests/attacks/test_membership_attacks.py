"""LiRA, RMIA and the membership metrics on constructed signals whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from privbench.attacks.membership import (
    lira_offline,
    lira_online,
    logit_confidence,
    rmia,
    true_class_probability,
)
from privbench.attacks.membership.metrics import (
    calibrated_rows,
    calibrated_threshold,
    membership_rows,
    ppv,
    slice_rows,
    vulnerable_records_row,
)
from privbench.attacks.membership.population import balanced_inclusion
from privbench.attacks.membership.rmia import marginal_probability
from privbench.attacks.membership.roc import auc, tpr_at_fpr


def test_logit_confidence_is_log_odds_of_the_true_class_and_stays_finite():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50, 4))  # three models, 50 records, 4 classes
    labels = rng.integers(0, 4, 50)
    p = true_class_probability(logits, labels)
    assert p.shape == (3, 50)
    np.testing.assert_allclose(p, np.take_along_axis(softmax(logits, -1), labels[None, :, None]
                                                     .repeat(3, 0), -1)[..., 0])
    np.testing.assert_allclose(logit_confidence(logits, labels), np.log(p / (1 - p)), rtol=1e-9)
    sure = np.array([[60.0, 0.0]])  # p rounds to 1 in float64: log(p/(1-p)) would be inf
    assert logit_confidence(sure, np.array([0])) == pytest.approx([60.0])


def _gaussian_world(n=2000, k=16, shift=1.0, seed=0):
    """Each record has its own hardness mu_x; training on it raises its phi by `shift`."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 3, n)  # per-record spread dwarfs the membership shift
    inc = balanced_inclusion(n, k, seed)
    shadow = mu + shift * inc + rng.normal(0, 0.5, (k, n))
    member = rng.random(n) < 0.5
    target = mu + shift * member + rng.normal(0, 0.5, n)
    return target, shadow, inc, member


def test_lira_beats_a_global_threshold_when_records_differ_in_hardness():
    target, shadow, inc, member = _gaussian_world()
    glob = auc(target[member], target[~member])  # LOSS-like: one threshold for all records
    for fixed in (True, False):
        on = lira_online(target, shadow, inc, fixed_variance=fixed)
        off = lira_offline(target, shadow, inc, fixed_variance=fixed)
        assert auc(on[member], on[~member]) > glob + 0.25
        assert auc(off[member], off[~member]) > glob + 0.2
        assert (tpr_at_fpr(on[member], on[~member], 1e-2).tpr
                > 5 * tpr_at_fpr(target[member], target[~member], 1e-2).tpr)


def test_lira_online_is_the_gaussian_likelihood_ratio():
    shadow = np.array([[1.0], [3.0], [10.0], [14.0]])
    inc = np.array([[True], [True], [False], [False]])
    score = lira_online(np.array([2.0]), shadow, inc, fixed_variance=False)
    # IN: mean 2, sd sqrt(2); OUT: mean 12, sd sqrt(8)
    want = (-0.5 * (0 / 2) - 0.5 * np.log(2)) - (-0.5 * (100 / 8) - 0.5 * np.log(8))
    assert score[0] == pytest.approx(want)


def test_lira_refuses_a_record_without_out_shadows():
    with pytest.raises(ValueError, match="no OUT shadow"):
        lira_online(np.zeros(2), np.zeros((2, 2)), np.array([[True, True], [False, True]]))


def test_balanced_inclusion_puts_each_record_in_exactly_half_the_models():
    inc = balanced_inclusion(1000, 16, 3)
    assert (inc.sum(axis=0) == 8).all()
    assert inc.mean(axis=1).min() > 0.45 and inc.mean(axis=1).max() < 0.55
    assert (balanced_inclusion(1000, 16, 3) == inc).all()
    one = balanced_inclusion(1000, 1, 3)
    assert one.shape == (1, 1000) and 0.45 < one.mean() < 0.55


def test_rmia_counts_population_records_beaten_by_the_likelihood_ratio():
    rng = np.random.default_rng(1)
    p_x, m_x = rng.uniform(0.1, 1, 40), rng.uniform(0.1, 1, 40)
    p_z, m_z = rng.uniform(0.1, 1, 25), rng.uniform(0.1, 1, 25)
    for gamma in (1.0, 2.0):
        score = rmia(p_x, m_x, p_z, m_z, gamma=gamma)
        brute = np.array([sum((px / mx) / (pz / mz) > gamma
                              for pz, mz in zip(p_z, m_z, strict=True))
                          for px, mx in zip(p_x, m_x, strict=True)])
        # the fraction is exact; LR(x) only breaks ties, within half a step
        np.testing.assert_array_equal(np.floor(score * 25 + 1e-9), brute)
    # a candidate that is one of the z never counts itself, and ties are broken by LR(x)
    same = rmia(np.array([0.5, 0.6]), np.array([0.5, 0.5]), np.array([0.5]), np.array([0.5]))
    assert same[0] < 1 / 1 and same[1] > same[0] and np.floor(same[1]) == 1


def test_rmia_offline_marginal_uses_only_out_references_with_the_linear_correction():
    ref = np.array([[0.9, 0.2], [0.3, 0.4], [0.5, 0.8]])
    ref_in = np.array([[True, False], [False, False], [False, True]])
    np.testing.assert_allclose(marginal_probability(ref), ref.mean(axis=0))
    out_mean = np.array([(0.3 + 0.5) / 2, (0.2 + 0.4) / 2])
    np.testing.assert_allclose(marginal_probability(ref, ref_in, offline_a=0.3),
                               0.5 * (1.3 * out_mean + 0.7))


def test_tpr_at_zero_and_1e4_are_read_at_or_below_the_target():
    nonmembers = np.arange(20000, dtype=float) / 20000  # 20,000 non-members: 1e-4 is 2 records
    # two members above every non-member; one between the top two non-members; one just below
    # the second (it needs FPR 1.5e-4, above the target 1e-4); the rest low
    members = np.r_[2.0, 1.5, 0.999925, 0.99985, np.full(16, 0.5)]
    rows = {r.metric: r for r in membership_rows("e", "x", "final_model", members, nonmembers)}
    assert rows["tpr@0"].value == 2 / 20 and rows["tpr@0"].details["achieved_fpr"] == 0
    assert rows["tpr@0"].details["resolvable"] is True
    assert rows["tpr@1e-04"].details["achieved_fpr"] == 1e-4
    assert rows["tpr@1e-04"].details["resolvable"] is True
    assert rows["tpr@1e-04"].value == 3 / 20


def test_ppv_at_priors_uses_the_operating_point_at_fpr_1e2():
    assert ppv(0.5, 0.01, 0.01) == pytest.approx(0.005 / (0.005 + 0.0099))
    rng = np.random.default_rng(2)
    members, nonmembers = rng.normal(2, 1, 1000), rng.normal(0, 1, 1000)
    rows = {r.metric: r for r in membership_rows("e", "x", "final_model", members, nonmembers)}
    t = tpr_at_fpr(members, nonmembers, 1e-2)
    for prior in (1e-2, 1e-1):
        row = rows[f"ppv@prior={prior:.0e}"]
        assert row.value == pytest.approx(ppv(t.tpr, t.achieved_fpr, prior))
        assert row.ci_low < row.value < row.ci_high
    assert rows["ppv@prior=1e-02"].value < rows["ppv@prior=1e-01"].value


def test_calibrated_threshold_is_fixed_on_reference_scores_not_on_the_target():
    reference = np.arange(100, dtype=float)  # 100 reference non-members
    t = calibrated_threshold(reference, 0.05)
    assert (reference >= t).sum() == 5 and 94 < t <= 95
    assert calibrated_threshold(reference, 0.0) > 99
    members, nonmembers = np.array([96.0, 97, 10, 20]), np.array([95.5, 1, 2, 3])
    rows = calibrated_rows("e", "x", "final_model", members, nonmembers, reference, "ref",
                           fprs=(0.05,))
    assert rows[0].metric == "calibrated_tpr@5e-02"
    assert rows[0].value == 0.5 and rows[0].details["realised_fpr"] == 0.25


def test_slices_and_most_vulnerable_records():
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.3])
    member = np.array([True, True, True, False, False, False])
    label = np.array([0, 1, 0, 0, 1, 1])
    client = np.array([0, 1, 1, -1, -1, -1])
    rows = {r.metric: r for r in slice_rows("e", "x", "final_model", scores, member,
                                            {"class": label, "client": client})}
    assert rows["auc[class=0]"].value == 0.5  # members 0.9, 0.1 vs non-member 0.7
    assert rows["auc[class=1]"].value == 1.0
    assert rows["auc[client=1]"].details["n_nonmembers"] == 3  # each client faces all non-members
    top = vulnerable_records_row("e", "x", "final_model", scores, member,
                                 [f"r{i}" for i in range(6)], label, top=3)
    assert [r["record"] for r in top.details["records"]] == ["r0", "r1", "r3"]
    assert top.value == pytest.approx(2 / 3)
