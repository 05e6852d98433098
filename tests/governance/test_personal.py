"""Personalisation at the edge: FedPer personal layers never leave the client (never sent,
noised or aggregated), and a personalised cell reports per-client personalised and global
accuracy and the personal layers' membership AUC, which the report says the claim does not
cover."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from privbench.data.partition import ClientShard
from privbench.governance.personal import PersonalLayers
from privbench.spec.schema import PrivacySpec, TrainSpec
from privbench.trainers import train_fedavg
from privbench.trainers.client_data import from_shards
from privbench.trainers.linear_stack import classifier_adapter

SUITE = """
name = "personal"
seed = 3
[data]
name = "digits"
clients = 20
partition = "dirichlet"
dirichlet_alpha = 0.5
[model]
hidden = [32]
[train]
rounds = 10
cohort = 5
lr = 0.2
[privacy]
epsilon = 4.0
[personal]
layers = ["2"]
finetune_epochs = 30
"""


def test_personal_layers_are_never_sent_noised_or_aggregated():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=80)
    shards = [ClientShard(c, np.arange(c * 8, (c + 1) * 8)) for c in range(10)]
    torch.manual_seed(0)
    adapter = classifier_adapter(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)))
    init = adapter.init_params()
    layers = PersonalLayers(["2.weight", "2.bias"], init, 10)
    trained = train_fedavg(adapter, from_shards(x, y, shards), None,
                           TrainSpec(rounds=4, cohort=4, batch_size=4),
                           PrivacySpec(epsilon=4.0), 0, record_rounds={1, 2, 3, 4},
                           personal=layers)
    final = trained.observations.final_params
    for n in ("2.weight", "2.bias"):  # the global copy never moves: no step, no noise
        assert torch.equal(final[n], init[n])
    assert not torch.equal(final["0.weight"], init["0.weight"])  # shared layers train
    seen = trained.observations.client_updates
    assert seen and all(set(u) == {"0.weight", "0.bias"}
                        for by_client in seen.values() for u in by_client.values())
    assert set(trained.observations.aggregates[1]) == {"0.weight", "0.bias"}
    took_part = {c for by_client in seen.values() for c in by_client}
    for c in range(10):  # a client's personal layers move only when it trained
        moved = not torch.equal(layers.store["2.weight"][c], init["2.weight"])
        assert moved == (c in took_part)
        assert int(layers.rounds_kept[c]) == sum(c in b for b in seen.values())


@pytest.fixture(scope="module")
def personal_run(tmp_path_factory):
    from conftest import write_suite

    from privbench.run.runner import run_suite
    from privbench.spec.suite import load_suite

    root = tmp_path_factory.mktemp("personal")
    suite = load_suite(str(write_suite(root / "p.toml", SUITE)), [])
    result = run_suite(suite, root / "run", workers=1)
    return root / "run", result.cells[0]


def test_a_personalised_cell_reports_per_client_accuracy_and_personal_membership_auc(
        personal_run):
    _, cell = personal_run
    assert cell.status == "ok", cell.error
    pers = cell.metric("personal", "accuracy_personalised")
    glob = cell.metric("personal", "accuracy_global")
    per_client = pers.details["per_client"]
    assert [r["client"] for r in per_client] == list(range(20))
    assert all(0 <= r["personalised"] <= 1 and 0 <= r["global"] <= 1 for r in per_client)
    assert pers.value == pytest.approx(np.mean([r["personalised"] for r in per_client]))
    assert glob.value == pytest.approx(np.mean([r["global"] for r in per_client]))
    # the global model's accuracy on each client's mix is the released model's, per class
    assert pers.ci_low <= pers.value <= pers.ci_high
    # on label-skewed clients the personal heads help: the paired gain excludes 0
    assert cell.metric("personal", "accuracy_gain").ci_low > 0
    mia = cell.metric("personal", "mia_auc_personalised")
    mia_global = cell.metric("personal", "mia_auc_global")
    assert mia.details["covered_by_claim"] is False and mia_global.details["covered_by_claim"]
    assert mia.ci_low <= mia.value <= mia.ci_high
    # personal layers fine-tuned without noise leak membership; the DP global model does not
    # measurably on the same records
    assert mia.ci_low > 0.5 and mia_global.ci_low < 0.5 < mia_global.ci_high
    assert mia.details["members"] == sum(r["records"] for r in per_client)


def test_the_report_and_card_say_personal_leakage_is_not_covered(personal_run):
    from privbench.run.sealed import read_json

    run, cell = personal_run
    html = (run / "index.html").read_text()
    assert "Their leakage is not covered by the global privacy claim" in html
    assert "MIA AUC personal (not covered)" in html
    card = read_json(run / "cells" / cell.key / "card.json")
    assert card["personal_layers"]["covered_by_claim"] is False
    assert card["personal_layers"]["layers"] == ["2.weight", "2.bias"]
    assert "personal layers</dt><dd>2.weight, 2.bias (fedper)" in html  # the report's card
