"""`audit.design = "auto"`: the white-box canary design with the most power within a budget.

Power grows with the number of canaries (the Gaussian-sum bound's interval shrinks as
1 / sqrt(m)), so the design takes as many as the model's geometry allows and the scoring budget
pays for:
- Dirac canaries (example-level DP-SGD): one per coordinate that no real record moves (first-layer
  weights fed by inputs blank in every training and population record), where a canary competes
  with the noise alone;
- random-unit canary clients: at most a fifth of the parameters, so the orthonormal canaries'
  subspace stays a small part of the model (beyond that, real updates respond along it and the
  one-run statistic spreads more than its interval allows);
- both: at most MAX_CANARIES, and projections (canaries x parameters x observed models) within
  SCORING_BUDGET multiply-adds.
The canary norm is 10 x clip: a correct trainer clips it to C, so it costs nothing, and a trainer
that fails to clip lets 10x the signal through.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from privbench.data.splits import SplitData
from privbench.spec.attack_schema import AuditSpec
from privbench.spec.schema import CellSpec

MAX_CANARIES = 2000
MIN_CANARIES = 20
SCORING_BUDGET = 2e9  # multiply-adds of the canary projections (about a second on one core)
AUTO_NORM = 10.0


def blank_input_coordinates(model: nn.Module, data: SplitData) -> int:
    """Coordinates of the first Linear layer's weight fed by inputs that are zero in every
    training and population record (their gradient is exactly zero for every real record)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    if first is None:
        return 0
    x = np.concatenate([data.x_train, data.x_pop])
    return int(np.all(x == 0, axis=0).sum()) * first.out_features


def auto_design(cell: CellSpec, data: SplitData, model: nn.Module) -> AuditSpec:
    """The cell's [audit] table with n_canaries and canary_norm chosen (unchanged unless
    design = "auto" and the canaries are dirac or random-unit)."""
    a = cell.audit
    if a.design != "auto" or a.canary not in ("dirac", "random-unit"):
        return a
    d = sum(p.numel() for p in model.parameters())
    geometry = blank_input_coordinates(model, data) if a.canary == "dirac" else d // 5
    budget = int(SCORING_BUDGET // (d * (cell.train.rounds + 1)))
    m = max(MIN_CANARIES, min(MAX_CANARIES, geometry, budget))
    return a.model_copy(update={"n_canaries": m, "canary_norm": max(a.canary_norm, AUTO_NORM)})
