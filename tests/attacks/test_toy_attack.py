"""Adding an attack is one new file and its registration: a toy attack written to a fresh module
(registered with `register_scorer`) runs in a real suite cell, its rows land in results.json with
intervals, the gates treat it as a membership attack, and the report shows it."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

from privbench.gates.evaluate import evaluate, load_cells
from privbench.gates.policy import load_policy
from privbench.run.runner import run_suite
from privbench.scoring import SCORERS, is_membership, row_kind
from privbench.spec.load import validate_suite
from privbench.spec.suite import Suite, expand

TOY_ATTACK = '''
"""A toy membership attack: a record's score is the model's confidence in its true class."""

import numpy as np

from privbench.attacks.membership.population import audit_pool
from privbench.attacks.membership.shadow_attacks import attack_rows
from privbench.attacks.membership.signals import true_class_probability
from privbench.query.classifier import logits
from privbench.scoring import register_scorer


@register_scorer("toy_confidence", kind="membership", contexts=("classifier",),
                 writes=("toy_confidence",), description="true-class confidence (a toy attack)")
def toy_confidence(ctx):
    pool = audit_pool(ctx.data, ctx.shards)
    scores = true_class_probability(logits(ctx.trained.model, pool.x).numpy(), pool.y)
    return attack_rows(ctx.key, "toy_confidence", np.asarray(scores), pool,
                       ctx.cell.spec.data.clients)
'''

SPEC = {"name": "toy", "seed": 0, "data": {"name": "digits", "clients": 10},
        "model": {"hidden": [16]}, "train": {"rounds": 3, "cohort": 5, "batch_size": 16},
        "privacy": {"epsilon": float("inf")}, "attacks": {"loss": {"enabled": False}}}


def test_a_toy_attack_in_one_new_file_runs_in_a_cell_and_is_gated(tmp_path, monkeypatch):
    (tmp_path / "toy_attack.py").write_text(textwrap.dedent(TOY_ATTACK))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(SCORERS, "_entries", dict(SCORERS._entries))  # registry restored after
    importlib.import_module("toy_attack")
    try:
        assert row_kind("toy_confidence") == "membership" and is_membership("toy_confidence")
        suite_spec = validate_suite(SPEC, "test")
        out = tmp_path / "run"
        run_suite(Suite(suite_spec, "test", expand(suite_spec, "test")), out, workers=1)
        results = json.loads((out / "results.json").read_text())
        rows = [r for r in results["cells"][0]["metrics"] if r["scorer"] == "toy_confidence"]
        auc = next(r for r in rows if r["metric"] == "auc")
        assert auc["ci_low"] <= auc["value"] <= auc["ci_high"]
        assert "toy_confidence" in (out / "index.html").read_text()
        # the TPR gate applies to it as to any registered membership attack
        (tmp_path / "policy.toml").write_text("[attacks]\nmax_tpr_at_fpr_1e-3 = 0.0\n")
        report = evaluate(load_cells(out), load_policy(tmp_path / "policy.toml"))
        gate = next(g for g in report.results if g.gate == "max_tpr_at_fpr_1e-3")
        assert "toy_confidence" in gate.note and gate.measured is not None
    finally:
        sys.modules.pop("toy_attack", None)
