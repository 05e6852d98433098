"""Conformance of every registered component to its contract, in the spirit of scikit-learn's
`check_estimator`: each data set, task, model, mechanism, scorer and attack in its registry is
checked, so a new entry that breaks its contract fails here, not in a user's run.

- a data set reports its kind, its size and where it is read from, and a built-in one loads with
  exactly the records it declares;
- a model of the zoo maps (B, n_features) to (B, n_classes) logits;
- a task builds a run whose adapter keeps the adapter contract;
- a mechanism's claim equals the epsilon of the ledger its run wrote (the largest client's where
  the unit is accounted per client), and it protects the unit it declares;
- a scorer declares a kind, its contexts and the row names it writes, loads, and every row of a
  real run is written by a declared scorer; membership and audit rows carry intervals;
- an attack declares its surface and a description.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from privbench.attacks import ATTACKS
from privbench.attacks.membership.catalog import MEMBERSHIP_ATTACKS
from privbench.data.registry import DATA_SETS
from privbench.data.splits import load_split
from privbench.models.adapter import ModelAdapter
from privbench.models.zoo import MODELS
from privbench.privacy.ledger import PrivacyLedger
from privbench.run.runner import run_suite
from privbench.run.tasks import TASKS, build_task
from privbench.scoring import SCORERS, row_kind
from privbench.spec.load import validate_suite
from privbench.spec.schema import DataSpec
from privbench.spec.suite import Suite, expand
from privbench.trainers.fedavg import LEDGER_FILE
from privbench.trainers.mechanisms import MECHANISMS

SURFACES = {"final_model", "final_weights", "iterates", "client_updates", "aggregates",
            "text only"}  # the blind baseline queries no model
KINDS = {"utility", "privacy", "membership", "baseline", "audit", "exposure", "inversion", "cost"}


@pytest.mark.parametrize("name", DATA_SETS.names())
def test_a_data_set_reports_its_kind_size_and_source_and_loads_that_many(name):
    info = DATA_SETS.get(name)
    assert info.kind in ("tabular", "text") and info.description
    assert info.path in ("", "file", "folder")
    if info.path or info.kind == "text":
        assert info.records is None  # counted when the user's files (or the spec) give them
        return
    assert info.records and info.records > 0
    data = load_split(DataSpec(name=name), seed=0)
    n = len(data.y_train) + len(data.y_test) + len(data.y_pop)
    assert n == info.records
    assert data.x_train.shape[1] == data.n_features and data.n_classes >= 2


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_zoo_model_maps_features_to_class_logits(name):
    from privbench.models.zoo import build_model
    from privbench.spec.schema import ModelSpec

    # a user's own module comes from its factory (tests/user_models.py holds a few)
    spec = ModelSpec(name=name, factory="user_models:tanh_mlp" if name == "factory" else None)
    n_features = 64  # an 8x8 image for the CNN, 64 columns for the others
    model = build_model(spec, n_features, 10, seed=0)
    out = model(torch.zeros(3, n_features))
    assert out.shape == (3, 10)


def test_every_task_builds_a_run_whose_adapter_keeps_the_contract(tmp_path):
    spec = {"name": "tasks", "seed": 0, "data": {"name": "digits", "clients": 4},
            "model": {"hidden": [8]}, "train": {"rounds": 1, "cohort": 2},
            "privacy": {"epsilon": math.inf}, "attacks": {"loss": {"enabled": False}}}
    cell = expand(validate_suite(spec, "test"), "test")[0]
    run = build_task(cell, tmp_path)
    assert isinstance(run.adapter, ModelAdapter)
    assert set(TASKS.names()) >= {"tabular", "causal_lm", "sequence_classification"}
    for _, task in TASKS.items():
        assert task.description and callable(task.build)


# One tiny private cell per registered way of adding noise (the wrappers wrap "central").
MECHANISM_CELLS = {
    "central": {"privacy": {"unit": "client", "setting": "central"}},
    "local": {"privacy": {"unit": "client", "setting": "local", "neighbouring": "replace_one"}},
    "example": {"privacy": {"unit": "example"}},
    "distributed": {"privacy": {"unit": "client"}, "secagg": {"enabled": True,
                                                             "distributed_dp": True}},
    "adaptive_clip": {"privacy": {"unit": "client", "adaptive_clip": True}},
    "noise_schedule": {"privacy": {"unit": "client", "noise_schedule": [2.0, 1.0]}},
}


def test_every_registered_mechanism_has_a_conformance_cell():
    private = {n for n, e in MECHANISMS.items() if n != "none"}  # mechanisms and wrappers
    assert private == set(MECHANISM_CELLS)


@pytest.fixture(scope="module")
def mechanism_run(tmp_path_factory) -> tuple[Path, dict]:
    """Every private mechanism trained once (digits, 12 clients, 3 rounds), in one run folder."""
    base = {"name": "conformance", "seed": 1, "data": {"name": "digits", "clients": 12},
            "model": {"hidden": [8]},
            "train": {"rounds": 3, "cohort": 4, "local_epochs": 1, "batch_size": 16},
            "privacy": {"epsilon": 4.0, "delta": 1e-5, "clip": 1.0},
            "attacks": {"loss": {"enabled": False}}}
    cells = []
    for name, extra in MECHANISM_CELLS.items():
        spec = json.loads(json.dumps(base))
        for table, values in extra.items():
            spec.setdefault(table, {}).update(values)
        spec["name"] = f"conformance-{name}"
        cells += expand(validate_suite(spec, "test"), "test")
    suite_spec = validate_suite(base, "test")
    out = tmp_path_factory.mktemp("mechanisms") / "run"
    run_suite(Suite(suite_spec, "test", cells), out, workers=1)
    return out, json.loads((out / "results.json").read_text())


def test_a_mechanisms_claim_equals_its_ledgers_epsilon(mechanism_run):
    out, results = mechanism_run
    assert len(results["cells"]) == len(MECHANISM_CELLS)
    for cell in results["cells"]:
        claim = cell["claim"]
        ledger_files = list(out.rglob(f"{cell['key']}*/**/{LEDGER_FILE}")) or \
            [p for p in out.rglob(LEDGER_FILE) if cell["key"] in str(p)]
        assert len(ledger_files) == 1, (cell["key"], ledger_files)
        ledger = PrivacyLedger(ledger_files[0], claim["delta"],
                               cell["spec"]["privacy"]["neighbouring"])
        per_client = cell["spec"]["privacy"]["unit"] == "example" or \
            cell["spec"]["privacy"]["setting"] == "local"
        spent = max(ledger.client_epsilon(c) for c in ledger.participations()) if per_client \
            else ledger.epsilon()
        assert math.isclose(claim["epsilon"], spent, rel_tol=1e-9), (cell["spec"]["name"],
                                                                      claim, spent)
        assert claim["unit"] == cell["spec"]["privacy"]["unit"]


@pytest.mark.parametrize("name", SCORERS.names())
def test_a_scorer_declares_its_kind_contexts_and_rows_and_loads(name):
    entry = SCORERS.get(name)
    assert entry.kind in KINDS and entry.description and entry.writes
    assert set(entry.contexts) <= {"classifier", "language"}
    assert callable(entry.load())


def test_every_row_of_a_real_run_is_written_by_a_declared_scorer(quick_results):
    for cell in quick_results["cells"]:
        for row in cell["metrics"]:
            kind = row_kind(row["scorer"])
            assert kind is not None, row["scorer"]
            interval = row.get("ci_low") is not None and row.get("ci_high") is not None
            if kind == "membership" and row["metric"].startswith(("auc", "tpr")):
                assert interval, row
                assert row["ci_low"] <= row["value"] + 1e-12 <= row["ci_high"] + 2e-12, row


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_an_attack_declares_its_surface(name):
    attack = ATTACKS[name]
    assert attack.surface in SURFACES, (name, attack.surface)
    assert attack.name == name


def test_the_membership_catalog_names_surfaces_and_descriptions():
    for info in MEMBERSHIP_ATTACKS:
        assert info.surface in SURFACES and info.description


def test_the_loss_attack_scores_higher_for_lower_loss():
    attack = ATTACKS["loss"]()
    scores = attack.score(np.array([0.1, 2.0]))
    assert scores[0] > scores[1]
