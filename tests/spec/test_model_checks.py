"""A user's model that a design cannot train or attack is refused while the suite is checked,
before any cell starts, in one line naming the field and the fix (issue 18 item 2): inversion
without a biased first nn.Linear (found only after training before), Dirac canaries on a model
with too few coordinates or that vmap cannot trace (found while planting), an example-level
engine that cannot run, a factory returning a non-Module or the wrong number of logits for the
user's own labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from user_tables import write_table

from privbench.errors import SpecError
from privbench.spec.load import validate_suite

TESTS = str(Path(__file__).resolve().parents[1])  # tests/, where the user models live


@pytest.fixture(autouse=True)
def _user_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(TESTS)


def spec(model: dict[str, Any], **tables: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "mine", "data": {"name": "digits", "clients": 20},
                           "model": model, "train": {"rounds": 3, "cohort": 5},
                           "privacy": {"epsilon": 8.0}}
    for table, values in tables.items():
        out[table] = {**out.get(table, {}), **values}
    return out


INVERSION = {"inversion": {"enabled": True}}
EXAMPLE_LEVEL = {"epsilon": 8.0, "unit": "example"}


def dirac(model: dict[str, Any], n_canaries: int = 50) -> dict[str, Any]:
    return spec(model, data={"clients": 1}, train={"cohort": 1}, privacy=EXAMPLE_LEVEL,
                audit={"enabled": True, "canary": "dirac", "surface": "final_weights",
                       "mode": "one-run", "n_canaries": n_canaries})


@pytest.mark.parametrize("suite, message", [
    (spec({"name": "cnn"}, attacks=INVERSION),
     "attacks.inversion.enabled = true: the inversion attacks read the update of a first "
     "nn.Linear layer with bias on the 64 inputs; model.name = 'cnn' starts with Conv2d"),
    (spec({"factory": "user_models:no_bias_first"}, attacks=INVERSION),
     "model.factory = 'user_models:no_bias_first' starts with Linear without bias (layer '0')"),
    (spec({"factory": "user_models:normed_logits"}, attacks=INVERSION),
     "attacks.inversion.image_attacks: iDLG reads the labels from the bias of a last nn.Linear "
     "layer giving the 10 logits; model.factory = 'user_models:normed_logits' ends with "
     "LayerNorm"),
    (dirac({"hidden": []}, n_canaries=1000),
     "audit.n_canaries = 1000: model.name = 'mlp' has 650 parameters, one per Dirac canary"),
    (dirac({"factory": "user_models:item_scaled"}),
     "audit.canary = 'dirac': the canaries' coordinates are chosen from per-example gradients "
     "by torch.func.vmap, which fails on model.factory = 'user_models:item_scaled'"),
    (spec({"factory": "user_models:item_scaled", "engine": "vmap"}, privacy=EXAMPLE_LEVEL),
     "privacy.unit = 'example': model.engine = 'vmap' cannot run on this model"),
    (spec({"factory": "user_models:not_a_module"}),
     "model.factory = 'user_models:not_a_module': returned a str, not a torch.nn.Module"),
])
def test_a_model_the_design_cannot_use_is_one_line_before_any_cell(suite, message):
    with pytest.raises(SpecError) as err:
        validate_suite(suite, "mine.toml")
    assert len(err.value.problems) == 1 and "\n" not in err.value.problems[0]
    assert message in err.value.problems[0], err.value.problems


@pytest.mark.parametrize("suite", [
    spec({"hidden": [16]}, attacks=INVERSION),
    dirac({"hidden": [16]}),
    spec({"factory": "user_models:item_scaled"}, privacy=EXAMPLE_LEVEL),  # auto finds an engine
    spec({"factory": "user_models:tanh_mlp"}, attacks=INVERSION),
])
def test_a_model_the_design_can_use_passes_the_checks(suite):
    validate_suite(suite, "mine.toml")


def test_a_factory_with_the_wrong_logits_for_the_users_labels_is_refused(tmp_path):
    csv = write_table(tmp_path / "t.csv")  # three classes: low, mid, high
    data = {"name": "table", "path": str(csv), "label": "outcome", "client": "site",
            "clients": 6}
    with pytest.raises(SpecError) as err:
        validate_suite(spec({"factory": "user_models:wrong_width"}, data=data,
                            train={"cohort": 3}), "mine.toml")
    assert err.value.problems == ["model.factory = 'user_models:wrong_width': the model maps "
                                  "inputs (2, 5) to (2, 2), not logits (2, 3); return one logit "
                                  "per class"]
