"""Registries: the spec's allowed values, its checks, the gates and `privbench list` read one table
per kind (data sets, tasks), so they agree; an unknown name is one line with the nearest name."""

from __future__ import annotations

import typing

import pytest

from privbench.data.registry import DATA_SETS, builtin_names, names_of
from privbench.data.text_clients import load_text_data
from privbench.errors import PrivbenchError
from privbench.gates.policy import load_policy
from privbench.gates.precheck import check_spec, privacy_units
from privbench.run.tasks import TASKS
from privbench.spec.schema import DATASET_SIZES, TEXT_DATASETS, CellSpec, DataSpec
from privbench.spec.suite import load_suite


def test_spec_values_and_sizes_derive_from_the_data_set_registry():
    assert typing.get_args(DataSpec.model_fields["name"].annotation) == DATA_SETS.names()
    assert set(DATASET_SIZES) == set(builtin_names("tabular")) == {"digits", "breast_cancer",
                                                                   "synthetic_federation"}
    assert set(names_of("tabular")) - set(DATASET_SIZES) == {"table", "stream", "images"}  # files
    assert TEXT_DATASETS == names_of("text") == ("support_messages", "jsonl")
    assert typing.get_args(CellSpec.model_fields["task"].annotation) == TASKS.names()


def test_an_unknown_name_is_one_line_with_the_nearest_known_name():
    with pytest.raises(PrivbenchError) as e:
        DATA_SETS.get("digit")
    assert str(e.value).startswith("data.name = 'digit': no such data set; did you mean 'digits'?")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("unit", ["client", "example"])
def test_delta_policy_on_the_llm_suite_counts_its_text_units(tmp_path, unit):
    """`privbench suite llm --policy P` with delta_at_most_one_over_n used to raise
    KeyError: 'support_messages'; n is now the clients or training messages of the text."""
    policy = tmp_path / "p.toml"
    policy.write_text("[privacy]\ndelta_at_most_one_over_n = true\n")
    suite = load_suite("llm", [f"privacy.unit={unit}", "privacy.delta=0.1"])
    spec = suite.cells[0].spec
    text = load_text_data(spec.data, spec.lm, spec.seed)
    n = text.n_clients if unit == "client" else len(text.train_texts)
    assert privacy_units(spec) == n
    if unit == "client":
        assert n == 20
    problems = check_spec(suite.cells, load_policy(policy))
    private = [c for c in suite.cells if c.spec.privacy.epsilon != float("inf")]
    assert len(problems) == len(private)  # delta 0.1 > 1/n for every private cell
    assert all(f"for n = {n} {unit}s (gate delta_at_most_one_over_n)" in p for p in problems)


def test_privacy_settings_and_the_plan_derive_from_the_mechanism_registry():
    """The spec allows the settings that select a registered mechanism; every private target
    selects exactly one, and the plan runs it (wrapped as the spec asks)."""
    from privbench.spec.schema import PrivacySpec, TrainSpec
    from privbench.trainers.mechanisms import MECHANISMS, SETTINGS, select
    from privbench.trainers.privacy_plan import make_plan

    assert typing.get_args(PrivacySpec.model_fields["setting"].annotation) == SETTINGS
    assert SETTINGS == ("central", "local")
    assert {select(False, "client", "central").name, select(True, "client", "central").name,
            select(True, "client", "local").name, select(True, "example", "central").name,
            select(True, "client", "central", distributed=True).name} == {
        n for n, e in MECHANISMS.items() if e.kind == "mechanism"}
    for name, entry in MECHANISMS.items():  # each entry names a class of that name
        assert entry.load().name == name
    train = TrainSpec(rounds=4, cohort=5)
    plan = make_plan(train, PrivacySpec(epsilon=4.0, adaptive_clip=True,
                                        noise_schedule=[2.0, 1.0]), 20, 10.0)
    assert plan.mechanism.describe() == "adaptive_clip(noise_schedule(central))"
    assert [plan.round_z(r) / plan.z for r in range(4)] == [2.0, 2.0, 1.0, 1.0]
    assert plan.update_noise_multiplier(0) > plan.round_z(0)  # the count takes its share
    assert make_plan(train, PrivacySpec(epsilon=4.0), 20, 10.0,
                     distributed=True).mechanism.describe() == "distributed"
    with pytest.raises(PrivbenchError) as e:
        MECHANISMS.get("centrl")
    assert str(e.value).startswith("privacy.setting = 'centrl': no such privacy mechanism; "
                                   "did you mean 'central'?")


def test_one_scorer_registry_feeds_the_cell_the_gates_and_the_report(tmp_path):
    """Each scorer declares its kind; the TPR gate and the report's membership tables both read
    that (they disagreed on audit_forensics before); a typo is one line with the nearest name."""
    from privbench.attacks.classifier_scorers import claim_scorer, utility_scorer
    from privbench.attacks.membership.metrics import fpr_metric_name
    from privbench.gates.evaluate import _tpr_gate
    from privbench.report.context import is_membership as report_is_membership
    from privbench.run.results import CellResult, MetricRow
    from privbench.scoring import SCORERS, get_scorer, is_membership, scorers_for

    assert get_scorer("utility") is utility_scorer
    assert scorers_for("classifier")[0] is utility_scorer
    assert claim_scorer in scorers_for("classifier") and claim_scorer in scorers_for("language")
    assert [get_scorer(n).__name__ for n in ("lm_utility", "lm_loss_attack")] == [
        "lm_utility_scorer", "lm_loss_attack_scorer"]
    with pytest.raises(PrivbenchError) as e:
        get_scorer("utilty")
    assert str(e.value).startswith("scorer = 'utilty': no such scorer; did you mean 'utility'?")
    for name in ("lira", "rmia", "loss", "an_external_attack"):
        assert is_membership(name)
    for name in ("utility", "privacy", "audit", "audit_forensics", "canary_exposure", "secagg",
                 "inversion_idlg", "inversion_idlg_aggregate", "personal"):
        assert not is_membership(name), name
    assert all(e.kind for _, e in SCORERS.items())
    tpr = fpr_metric_name(1e-3)
    rows = [MetricRow("c", "audit_forensics", tpr, 0.9), MetricRow("c", "lira", tpr, 0.2)]
    cell = CellResult(key="c", label="c", axes={}, status="ok", spec={}, metrics=rows)
    gate = _tpr_gate(cell, 0.5)  # the forensics row is no attack
    assert gate.measured == 0.2 and gate.status == "pass" and "lira" in gate.note
    assert [report_is_membership(m) for m in rows] == [False, True]


def test_a_policy_gating_a_metric_no_scorer_writes_is_refused_before_work(tmp_path):
    from privbench.errors import SpecError

    policy = tmp_path / "p.toml"
    policy.write_text('[utility]\nmetric = "utilty.accuracy"\nmin = 0.5\n')
    with pytest.raises(SpecError) as e:
        load_policy(policy)
    assert "utility.metric = 'utilty.accuracy': no scorer writes 'utilty' rows; did you mean " \
           "'utility'?" in str(e.value)
    policy.write_text('[utility]\nmetric = "utility.perplexity"\n')
    assert load_policy(policy).utility.metric == "utility.perplexity"
