"""`audit.design = "auto"`: as many white-box canaries as the model's geometry and the scoring
budget allow, at norm 10 x clip, and the audit of a correct trainer still PASSes with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import audit_row

from privbench.audit.design import auto_design, blank_input_coordinates
from privbench.data.splits import load_split
from privbench.models import build_model
from privbench.spec.load import validate_suite
from privbench.spec.suite import expand

SPEC = {
    "name": "auto-design", "seed": 2,
    "data": {"name": "digits", "clients": 1},
    "model": {"hidden": [64]},
    "train": {"rounds": 4, "cohort": 1, "batch_size": 900, "lr": 2.0},
    "privacy": {"epsilon": 4.0, "delta": 1e-5, "clip": 1.0, "unit": "example"},
    "attacks": {"loss": {"enabled": False}},
    "audit": {"enabled": True, "mode": "one-run", "surface": "iterates", "canary": "dirac",
              "design": "auto"},
}


def cell_of(spec: dict):
    return expand(validate_suite(spec, "test"), "test")[0].spec


def test_auto_design_takes_every_blank_input_coordinate_and_a_fifth_of_the_parameters():
    spec = cell_of(SPEC)
    data = load_split(spec.data, spec.seed)
    model = build_model(spec.model, data.n_features, data.n_classes, spec.seed)
    blank = int(np.all(np.concatenate([data.x_train, data.x_pop]) == 0, axis=0).sum())
    assert blank >= 3 and blank_input_coordinates(model, data) == blank * 64
    dirac = auto_design(spec, data, model)
    assert (dirac.n_canaries, dirac.canary_norm) == (blank * 64, 10.0)
    clients = cell_of({**SPEC, "data": {"name": "digits", "clients": 20},
                       "train": {"rounds": 4, "cohort": 20},
                       "privacy": {"epsilon": 4.0, "delta": 1e-5, "clip": 1.0},
                       "audit": {**SPEC["audit"], "canary": "random-unit"}})
    unit = auto_design(clients, data, model)
    assert unit.n_canaries == sum(p.numel() for p in model.parameters()) // 5  # 962
    manual = cell_of({**SPEC, "audit": {**SPEC["audit"], "design": "manual"}})
    assert auto_design(manual, data, model) == manual.audit


def test_auto_designed_audit_of_the_correct_trainer_passes_with_its_power(tmp_path: Path):
    row = audit_row(SPEC, tmp_path)
    d = row.details
    print(f"\nauto design: {d['n_canaries']} canaries, norm {d['canary_norm']}, eps_LB "
          f"{row.value:.3f} of {d['claimed_epsilon']:.3f}, caught eps >= {d['eps_caught']:.2f}")
    assert d["n_canaries"] >= 192 and d["design"] == "auto"
    assert d["verdict"] == "PASS" and d["eps_caught"] > d["claimed_epsilon"]
