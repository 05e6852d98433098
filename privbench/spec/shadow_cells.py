"""Which cells train shadow models: `attacks.shadows.cells` read against the cell's privacy."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from privbench.spec.schema import CellSpec


def trains_shadows(spec: CellSpec) -> bool:
    """Whether this cell trains shadow models (and so runs LiRA and RMIA) under
    `attacks.shadows.cells`: "all"; "no_dp": the cells without DP (privacy.epsilon = inf);
    "example_no_dp": those whose privacy.unit is also "example" (a record is what they test).

    Args:
        spec: the cell's spec.
    Returns:
        True when the cell's LiRA and RMIA scorers train shadows.
    """
    cells = spec.attacks.shadows.cells
    if cells == "all":
        return True
    no_dp = math.isinf(spec.privacy.epsilon)
    return no_dp and (cells == "no_dp" or spec.privacy.unit == "example")
