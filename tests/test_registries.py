"""Registries: the spec's allowed values, its checks, the gates and `privbench list` read one table
per kind (data sets, tasks), so they agree; an unknown name is one line with the nearest name."""

from __future__ import annotations

import typing

import pytest

from privbench.datasets import DATA_SETS, builtin_names, names_of
from privbench.errors import PrivbenchError
from privbench.gates import check_spec, load_policy, privacy_units
from privbench.lm.textdata import load_text_data
from privbench.spec import DATASET_SIZES, TEXT_DATASETS, CellSpec, DataSpec
from privbench.suite import load_suite
from privbench.tasks import TASKS


def test_spec_values_and_sizes_derive_from_the_data_set_registry():
    assert typing.get_args(DataSpec.model_fields["name"].annotation) == DATA_SETS.names()
    assert set(DATASET_SIZES) == set(builtin_names("tabular")) == {"digits", "breast_cancer"}
    assert set(names_of("tabular")) - set(DATASET_SIZES) == {"table", "images"}  # user files
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
