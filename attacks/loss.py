"""The LOSS membership-inference attack (Yeom et al. 2018): a record with lower loss is a member."""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class LossAttack:
    """Black-box attack on the `final_model` surface; needs only per-example losses."""

    name: ClassVar[str] = "loss"
    surface: ClassVar[str] = "final_model"
    description: ClassVar[str] = "LOSS (Yeom et al. 2018): score = -loss on the released model"

    def score(self, losses: np.ndarray) -> np.ndarray:
        """Membership scores, higher meaning 'member'."""
        return -np.asarray(losses, dtype=np.float64)
