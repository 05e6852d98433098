"""The black-box one-run audit of language models: secret canaries in a fixed template, scored by
their log-likelihood under the released model, certified by the one-run bound with a verdict."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from saved_lm import SUITE

from privbench.attacks.exposure_lm import secret_log_likelihoods
from privbench.audit.lm_canaries import (
    draw_secret_canaries,
    plant_secret_canaries,
    secret_audit_rows,
    secret_scores,
)
from privbench.data.text_clients import load_text_data
from privbench.errors import SpecError
from privbench.models.pretrained_lm import load_model, load_tokenizer
from privbench.run.runner import run_suite
from privbench.spec.suite import load_suite

AUDIT = '\n[audit]\nenabled = true\ncanary = "secret"\nsurface = "final_model"\nn_canaries = 40\n'


def _cell_spec(saved_model, overrides=()):
    suite = load_suite_text(saved_model, overrides)
    return suite.cells[0].spec


def load_suite_text(folder, overrides=()):
    """The LM test suite of tests/run/test_lm_suite.py with the secret-canary audit on."""
    path = Path(tempfile.mkdtemp()) / "suite.toml"
    path.write_text(SUITE.format(path=folder) + AUDIT)
    return load_suite(str(path), list(overrides))


def test_every_lm_cell_gets_eps_lb_ceiling_and_verdict(saved_model, tmp_path):
    suite = load_suite_text(saved_model)
    run = run_suite(suite, tmp_path / "run", workers=1)
    for cell in run.cells:
        assert cell.status == "ok", cell.error
        row = cell.metric("audit", "eps_lb")
        ceiling = cell.metric("audit", "eps_ceiling")
        assert row is not None and ceiling is not None, cell.label
        d = row.details
        assert d["verdict"] in ("PASS", "FAIL", "TOO_SMALL") and d["n"] == 20
        assert d["n_canaries"] == 40 and row.surface == "final_model"
        assert 0.0 <= row.value <= ceiling.value
        assert d["claimed_epsilon"] == cell.claim["epsilon"]
        if cell.claim["epsilon"] == float("inf"):
            assert d["verdict"] == "TOO_SMALL"
        else:
            assert d["verdict"] != "FAIL", d["note"]
        # the planted audit canaries are not members the LOSS attack samples
        assert cell.metric("loss", "auc") is not None


def test_canaries_are_units_of_privacy(saved_model):
    """Example level: one record in a real client; client level: a client of its own, with the
    expected cohort scaled so that real clients keep their sampling rate."""
    for unit in ("example", "client"):
        spec = _cell_spec(saved_model, [f"privacy.unit={unit}", "privacy.epsilon=2.0"])
        data = load_text_data(spec.data, spec.lm, spec.seed)
        planted, canaries, train = plant_secret_canaries(spec, data)
        k = int(canaries.bits.sum())
        assert 0 < k < canaries.m and len(set(canaries.secrets)) == canaries.m
        assert len(planted.train_texts) == len(data.train_texts) + k * canaries.copies
        assert planted.train_is_canary.sum() == data.train_is_canary.sum() + k * canaries.copies
        if unit == "example":
            assert canaries.copies == 1 and planted.n_clients == data.n_clients
            assert train.cohort == spec.train.cohort
            assert (canaries.clients[canaries.bits] < data.n_clients).all()
        else:
            assert planted.n_clients == data.n_clients + k
            rate = train.cohort / (data.n_clients + canaries.m / 2)
            assert rate == pytest.approx(spec.train.cohort / data.n_clients)
        assert (canaries.clients[~canaries.bits] == -1).all()


def test_bound_covers_a_model_that_never_saw_the_canaries(saved_model):
    """Coverage on a mechanism of known epsilon 0: a model independent of the bits. In 60 seeded
    draws of secrets and bits, eps_LB is 0 (at most the true epsilon) in at least 95%."""
    spec = _cell_spec(saved_model, ["privacy.epsilon=2.0", "audit.selection=union"])
    model = load_model(saved_model, "causal_lm", 1)
    lls = secret_log_likelihoods(model, load_tokenizer(saved_model), "the audit code is",
                                 spec.lm.canaries.digits).numpy()
    covered = 0
    for seed in range(60):
        s = spec.model_copy(update={"seed": seed})
        canaries = draw_secret_canaries(s, 6)
        row = secret_audit_rows("x", s, secret_scores(lls, canaries), canaries, 2.0, 1e-5)[0]
        covered += row.value <= 0.0
    assert covered >= 57


def test_a_perfect_separation_certifies_the_ceiling(saved_model):
    """Scores that reveal the bits (a model that memorised every included secret) certify more
    than the claim, up to the design's ceiling: the scoring path can refute a claim below it."""
    spec = _cell_spec(saved_model, ["privacy.epsilon=1.0", "audit.n_canaries=50"])
    canaries = draw_secret_canaries(spec, 6)
    lls = np.zeros(100)
    for s, b in zip(canaries.secrets, canaries.bits, strict=True):
        lls[int(s)] = 0.0 if b else -10.0
    eps, ceiling = secret_audit_rows("x", spec, secret_scores(lls, canaries), canaries, 1.0,
                                     1e-5)
    assert 1.0 < eps.value <= ceiling.value
    assert eps.details["verdict"] == "FAIL"


@pytest.mark.parametrize("override, message", [
    (["audit.canary=dirac"], "audit.canary = 'dirac': gradient canaries enter example-level"),
    (["audit.n_canaries=60"], "audit.n_canaries = 60: at most half"),
])
def test_lm_audit_errors_name_the_field(saved_model, override, message):
    with pytest.raises(SpecError) as err:
        load_suite_text(saved_model, override)
    assert any(message in line for line in err.value.lines()), err.value.lines()


WHITE_BOX = ('\n[audit]\nenabled = true\ncanary = "auto"\nsurface = "iterates"\n'
             'n_canaries = 200\ncanary_norm = 10.0\n')


def test_canary_clients_audit_an_lm_on_its_iterates_and_tell_dp_from_no_dp(saved_model,
                                                                          tmp_path):
    """Client level: canary clients (random unit updates in the trainable parameters) on the
    round models, the tabular white-box design on the one trainer; "auto" gives example-level
    cells of the same suite (LoRA, several clients) the secret canaries."""
    path = tmp_path / "suite.toml"
    text = SUITE.format(path=saved_model).replace("rounds = 3", "rounds = 8").replace(
        "digits = 2", "digits = 3")
    path.write_text(text.replace("[lm]\n", '[lm]\noptimizer = "sgd"\n') + WHITE_BOX)
    suite = load_suite(str(path))
    kinds = {c.spec.privacy.unit: (c.spec.audit.canary, c.spec.audit.surface)
             for c in suite.cells}
    assert kinds == {"client": ("random-unit", "iterates"), "example": ("secret", "final_model")}
    client = load_suite(str(path), ['sweep.privacy.unit=["client"]'])
    run = run_suite(client, tmp_path / "run", workers=1)
    rows = {cell.axes["privacy.epsilon"]: cell.metric("audit", "eps_lb") for cell in run.cells}
    private, none = rows[2.0], rows[float("inf")]
    assert private.surface == none.surface == "iterates"
    assert private.details["canary"] == "random-unit" and private.details["n_canaries"] == 200
    assert private.details["estimator"] == "gauss-sum"  # plain SGD: the mechanism's own output
    assert private.details["verdict"] == "PASS" and private.value <= 2.0
    assert none.value > 2.5 and none.value > private.value + 2  # no DP: the canaries show
    forensic = [m for c in run.cells for m in c.metrics if m.scorer == "audit_forensics"]
    assert forensic and all(m.details["verdict"] == "PASS" for m in forensic)


def test_dirac_records_of_random_clients_audit_an_lm_at_example_level(saved_model, tmp_path):
    """Example level in a federation (6 clients, cohort 3, Adam at the clients, full
    fine-tuning): Dirac canaries are records of random real clients on coordinates no record
    moves (rows of the position embedding past the longest record: 32 tokens of a model with 64
    positions), trained by DP-SGD or, without DP, by local SGD's minibatches. Without DP the
    canaries show (eps_LB far above the private cell's); with DP the f-DP bound (valid under
    the optimizer's post-processing) passes."""
    path = tmp_path / "suite.toml"
    text = SUITE.format(path=saved_model).replace("rounds = 3", "rounds = 8").replace(
        "digits = 2", "digits = 3").replace("[lm]\n", '[lm]\nfinetune = "full"\n')
    path.write_text(text + WHITE_BOX)
    suite = load_suite(str(path), ['sweep.privacy.unit=["example"]'])
    assert {(c.spec.audit.canary, c.spec.audit.surface) for c in suite.cells} == {
        ("dirac", "iterates")}
    run = run_suite(suite, tmp_path / "run", workers=1)
    rows = {cell.axes["privacy.epsilon"]: cell.metric("audit", "eps_lb") for cell in run.cells}
    private, none = rows[2.0], rows[float("inf")]
    assert private.details["canary"] == none.details["canary"] == "dirac"
    assert private.details["estimator"] == "fdp"  # several clients, Adam: post-processed
    assert private.details["verdict"] == "PASS" and private.value <= 2.0
    assert none.details["verdict"] == "TOO_SMALL"
    assert none.value > 1.5 and none.value > private.value + 1.5, (none.value, private.value)
