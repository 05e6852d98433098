"""The model zoo beyond the MLP: a CNN for the digit images and a user's `module:factory` model
train through `run_cell`, are attacked (LOSS) and audited (one run, mislabelled and ood input
canaries, random-unit client canaries); a factory that cannot be used is refused before the first
round with one line naming `model.factory`."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from conftest import run_cli, write_suite

from privbench.errors import PrivbenchError, SpecError
from privbench.models import build_model
from privbench.run.cell import run_cell
from privbench.spec.load import validate_suite
from privbench.spec.schema import ModelSpec
from privbench.spec.suite import expand

TESTS = str(Path(__file__).resolve().parents[1])  # tests/, where the user models live
MODELS = {"cnn": {"name": "cnn", "channels": [4, 8]},
          "factory": {"factory": "user_models:tanh_mlp", "kwargs": {"width": 12}}}
CANARIES = {"mislabelled": {"canary": "mislabelled", "surface": "final_model"},
            "ood": {"canary": "ood", "surface": "final_model"},
            "random-unit": {"canary": "random-unit", "surface": "final_weights"}}


def cell_spec(model: dict, audit: dict) -> dict:
    return {"name": "zoo", "seed": 1,
            "data": {"name": "digits", "clients": 30},
            "model": model,
            "train": {"rounds": 3, "cohort": 10, "batch_size": 16, "lr": 0.1},
            "privacy": {"epsilon": 8.0, "delta": 1e-5, "clip": 1.0, "unit": "client"},
            "attacks": {"loss": {"enabled": True}},
            "audit": {"enabled": True, "mode": "one-run", "n_canaries": 40, **audit}}


@pytest.fixture(autouse=True)
def _user_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(TESTS)


@pytest.mark.parametrize("model", list(MODELS))
def test_zoo_model_learns_and_is_attacked(tmp_path, model):
    """Without DP (a few rounds of FedAvg learn the digits well beyond chance, 0.1)."""
    spec = cell_spec(MODELS[model], CANARIES["ood"])
    spec["privacy"]["epsilon"] = math.inf
    spec["train"].update(rounds=15, lr=0.5, local_epochs=2)
    result = run_cell(expand(validate_suite(spec, "test"), "test")[0], tmp_path)
    assert result.status == "ok", result.error
    assert result.metric("utility", "accuracy").value > 0.5
    assert 0.0 <= result.metric("loss", "auc").value <= 1.0


@pytest.mark.parametrize(("model", "canary"), [("cnn", "mislabelled"), ("cnn", "random-unit"),
                                               ("factory", "ood"),
                                               ("factory", "random-unit")])
def test_zoo_model_dp_cell_is_attacked_and_audited(tmp_path, model, canary):
    """With client-level DP (epsilon 8): the LOSS attack and the one-run audit score it."""
    spec = validate_suite(cell_spec(MODELS[model], CANARIES[canary]), "test")
    assert spec.model.name == model
    result = run_cell(expand(spec, "test")[0], tmp_path)
    assert result.status == "ok", result.error
    assert result.metric("loss", "auc") is not None
    eps_lb = result.metric("audit", "eps_lb")
    assert eps_lb.details["canary"] == canary and eps_lb.details["mode"] == "one-run"
    assert eps_lb.details["n_canaries"] == 40
    assert 0.0 <= eps_lb.value <= eps_lb.details["claimed_epsilon"]  # a correct trainer passes


def test_cnn_and_factory_are_built_deterministically_from_the_seed():
    for spec in (ModelSpec(name="cnn"), ModelSpec(factory="user_models:tanh_mlp")):
        a, b = (build_model(spec, 64, 10, seed=5) for _ in range(2))
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(),
                                                     strict=True))
        assert not torch.equal(next(a.parameters()), next(build_model(spec, 64, 10, 6)
                                                          .parameters()))
    out = build_model(ModelSpec(name="cnn"), 64, 10, seed=0)(torch.zeros(3, 64))
    assert out.shape == (3, 10)


@pytest.mark.parametrize(("model", "message"), [
    ({"factory": "no_such_module:fn"}, r"^model.factory = 'no_such_module:fn': cannot import "
                                       r"no_such_module \(ModuleNotFoundError"),
    ({"factory": "user_models:missing"}, "user_models has no attribute 'missing'"),
    ({"factory": "user_models:NOT_CALLABLE"}, "NOT_CALLABLE is not callable"),
    ({"factory": "user_models"}, 'must be "package.module:function"'),
    ({"factory": "user_models:wrong_width"}, r"maps inputs \(2, 64\) to \(2, 9\), not logits "
                                             r"\(2, 10\)"),
    ({"factory": "user_models:tanh_mlp", "kwargs": {"depth": 2}},
     r"calling it with .* failed \(TypeError"),
    ({"name": "factory"}, r'^model.name = "factory": needs model.factory'),
    ({"name": "cnn", "factory": "user_models:tanh_mlp"}, "model.name = 'cnn' builds another"),
])
def test_an_unusable_model_is_one_line_naming_the_field_before_training(model, message):
    spec = cell_spec(model, CANARIES["ood"])
    with pytest.raises(SpecError) as err:
        validate_suite(spec, "test")
    assert len(err.value.problems) == 1
    assert "\n" not in err.value.problems[0]
    assert re.search(message, err.value.problems[0]), err.value.problems


def test_cnn_refuses_non_square_inputs_naming_the_fix():
    with pytest.raises(PrivbenchError, match=r"^model.name = 'cnn': takes square one-channel "
                                             r"images given flat, but the data has 30 features"):
        build_model(ModelSpec(name="cnn"), 30, 2, seed=0)


def test_cli_refuses_a_factory_with_the_wrong_output_in_one_line(tmp_path):
    suite = write_suite(tmp_path / "bad.toml", """
name = "user"
[data]
name = "digits"
clients = 20
[model]
factory = "user_models:wrong_width"
[train]
rounds = 3
cohort = 5
""")
    env = {"PYTHONPATH": TESTS, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin"}
    proc = run_cli("suite", str(suite), "--out", str(tmp_path / "run"), env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "model.factory" in line]
    assert len(lines) == 1 and "not logits (2, 10)" in lines[0], proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()
