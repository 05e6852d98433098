"""Suite specs: validation errors are one line naming the field, overrides, sweeps, hashing."""

from __future__ import annotations

import math

import pytest
from conftest import run_cli, write_suite

from privbench.errors import SpecError
from privbench.spec.suite import content_hash, load_suite

BASE = """
name = "t"
[data]
name = "digits"
clients = 50
[train]
rounds = 5
cohort = 10
[privacy]
epsilon = 4.0
delta = 1e-5
"""

BAD_SUITES = {
    "unknown key": (BASE.replace("delta = 1e-5", "delta = 1e-5\nepsilonn = 3"),
                    "privacy.epsilonn", "unknown key"),
    "wrong type": (BASE.replace("rounds = 5", 'rounds = "ten"'), "train.rounds", "'ten'"),
    "epsilon zero": (BASE.replace("epsilon = 4.0", "epsilon = 0.0"), "privacy.epsilon = 0",
                     "greater than 0"),
    "epsilon negative": (BASE.replace("epsilon = 4.0", "epsilon = -1.0"), "privacy.epsilon = -1",
                         "greater than 0"),
    "delta one": (BASE.replace("delta = 1e-5", "delta = 1.0"), "privacy.delta = 1",
                  "less than 1"),
    "cohort above clients": (BASE.replace("cohort = 10", "cohort = 80"), "train.cohort = 80",
                             "at most data.clients (50)"),
    "unknown data set": (BASE.replace('name = "digits"', 'name = "mnist"'), "data.name = 'mnist'",
                         "'digits', 'breast_cancer', 'synthetic_federation', 'table', 'stream', "
                         "'images', 'support_messages' or 'jsonl'"),
    "string for a number": (BASE.replace("[train]", '[train]\nlr = "0.1"'), "train.lr = '0.1'",
                            "must be a valid number"),
    "float for an integer": (BASE.replace("rounds = 5", "rounds = 5.0"), "train.rounds = 5.0",
                             "must be a valid integer"),
    "string for a boolean": (BASE + '[attacks.loss]\nenabled = "yes"\n',
                             "attacks.loss.enabled = 'yes'", "must be a valid boolean"),
    "infinite learning rate": (BASE.replace("[train]", "[train]\nlr = inf"), "train.lr = inf",
                               "must be a finite number"),
}


@pytest.mark.parametrize("case", sorted(BAD_SUITES))
def test_bad_suite_is_one_line_naming_the_field(tmp_path, case):
    text, field, allowed = BAD_SUITES[case]
    path = write_suite(tmp_path / "bad.toml", text)
    proc = run_cli("suite", str(path), "--out", str(tmp_path / "out"), timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bad.toml: " + field), lines[0]
    assert allowed in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


def test_every_problem_is_reported(tmp_path):
    text = BASE.replace("epsilon = 4.0", "epsilon = -1.0").replace("rounds = 5", "rounds = 0")
    with pytest.raises(SpecError) as err:
        load_suite(str(write_suite(tmp_path / "two.toml", text)))
    assert [line.split(" = ")[0] for line in err.value.lines()] == [
        "two.toml: train.rounds", "two.toml: privacy.epsilon"]


def test_toml_syntax_error_is_one_line(tmp_path):
    path = write_suite(tmp_path / "broken.toml", "[data\nname = 1")
    proc = run_cli("suite", str(path), timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(f"{path}: not valid TOML")


def test_unknown_builtin_suite_names_the_choices():
    proc = run_cli("suite", "no-such-suite", timeout=60)
    assert proc.returncode == 2
    listed = proc.stderr.split("built-in: ", 1)[1].split(")")[0].split(";")[0]
    assert {"audit", "default", "quick", "llm"} <= {n.strip() for n in listed.split(",")}


def test_set_overrides_any_field_and_pins_a_swept_one(tmp_path):
    path = write_suite(tmp_path / "s.toml", BASE + '[sweep]\n"privacy.epsilon" = [1.0, 2.0]\n')
    assert len(load_suite(str(path)).cells) == 2
    suite = load_suite(str(path), ["privacy.epsilon=3", "train.lr=0.5", "model.hidden=[8, 4]",
                                   "data.partition=dirichlet"])
    assert len(suite.cells) == 1
    spec = suite.cells[0].spec
    assert (spec.privacy.epsilon, spec.train.lr, spec.model.hidden, spec.data.partition) == (
        3.0, 0.5, [8, 4], "dirichlet")
    with pytest.raises(SpecError, match=r"--set: 'privacy\.epsilon': expected FIELD=VALUE"):
        load_suite(str(path), ["privacy.epsilon"])
    with pytest.raises(SpecError, match=r"privacy\.bogus: unknown key"):
        load_suite(str(path), ["privacy.bogus=1"])


def test_sweep_is_a_grid_with_inf_as_no_dp(tmp_path):
    text = BASE + ('[sweep]\n"privacy.epsilon" = [1.0, inf]\n'
                   '"data.partition" = ["iid", "dirichlet"]\n')
    suite = load_suite(str(write_suite(tmp_path / "g.toml", text)))
    combos = [(c.spec.privacy.epsilon, c.spec.data.partition) for c in suite.cells]
    assert combos == [(1.0, "iid"), (1.0, "dirichlet"), (math.inf, "iid"), (math.inf, "dirichlet")]
    assert len({c.key for c in suite.cells}) == 4
    assert suite.cells[2].label == "epsilon=inf · iid"


def test_bad_sweep_value_and_key_name_the_sweep(tmp_path):
    bad_value = BASE + '[sweep]\n"privacy.epsilon" = [1.0, -2.0]\n'
    with pytest.raises(SpecError) as err:
        load_suite(str(write_suite(tmp_path / "v.toml", bad_value)))
    assert err.value.lines() == ["v.toml: sweep.privacy.epsilon[1] = -2: must be greater than 0 "
                                 "(use inf to train without DP)"]
    bad_key = BASE + '[sweep]\n"privacy.epsilom" = [1.0]\n'
    with pytest.raises(SpecError, match=r"sweep\.privacy\.epsilom: unknown field"):
        load_suite(str(write_suite(tmp_path / "k.toml", bad_key)))


def test_content_hash_follows_what_the_cell_computes(tmp_path):
    path = write_suite(tmp_path / "h.toml", BASE)
    cell = load_suite(str(path)).cells[0]
    assert content_hash(cell.spec) == cell.key == load_suite(str(path)).cells[0].key
    renamed = load_suite(str(path), ["name=other", "description=words"]).cells[0]
    assert renamed.key == cell.key  # names do not change what is computed
    assert load_suite(str(path), seed=1).cells[0].key != cell.key
    assert load_suite(str(path), ["train.lr=0.2"]).cells[0].key != cell.key


def test_builtin_suites_validate():
    for name in ("quick", "default"):
        suite = load_suite(name)
        assert suite.cells, name


def test_list_names_every_suite_attack_inversion_attack_and_mechanism():
    from typing import get_args

    from privbench.attacks import ATTACKS
    from privbench.attacks.inversion import INVERSION_ATTACKS
    from privbench.spec.attack_schema import InversionAttackSpec
    from privbench.spec.suite import builtin_suites

    proc = run_cli("list", timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    from privbench.trainers.mechanisms import MECHANISMS

    for name in [*builtin_suites(), *ATTACKS, *INVERSION_ATTACKS, *MECHANISMS.names()]:
        assert f" {name} " in out, name
    image = get_args(get_args(InversionAttackSpec.model_fields["image_attacks"].annotation)[0])
    assert set(image) <= set(INVERSION_ATTACKS)
