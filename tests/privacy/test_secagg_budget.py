"""Under distributed DP the ledger and the budget chart compose each round's realised noise, so
the epsilon spent after the last round is the Claim's (issue 15 item 6: the secagg budget chart
showed the planned epsilon 8 where the claim was 5.25)."""

from __future__ import annotations

import math

import pytest

from privbench.run.cell import run_cell
from privbench.spec.suite import load_suite

SMALL = ["data.clients=20", "train.rounds=4", "train.cohort=8", "secagg.compression=none",
         "secagg.groups=0", "privacy.epsilon=8"]


@pytest.mark.parametrize("dropout", [0.1, 0.5])
def test_the_budget_spent_is_the_realised_claim(tmp_path, dropout):
    cell = load_suite("secagg", [*SMALL, f"secagg.dropout_rate={dropout}"]).cells[0]
    result = run_cell(cell, tmp_path)
    assert result.status == "ok", result.error
    rows = [h for h in result.history if "epsilon_spent" in h]
    assert len(rows) == 4
    claim = result.claim["epsilon"]
    assert math.isfinite(claim) and claim != pytest.approx(8.0, rel=1e-2)  # realised, not planned
    assert rows[-1]["epsilon_spent"] == pytest.approx(claim, rel=2e-3)
    spent = [r["epsilon_spent"] for r in rows]
    assert spent == sorted(spent)
