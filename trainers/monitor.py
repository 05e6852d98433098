"""The training monitor: after each round, the global model's loss and accuracy on public data
(the population pool, never a client's records, so watching costs no privacy). A non-finite loss
or an accuracy drop beyond the margin rolls the model back to the last good round."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]


@dataclass
class RoundMonitor:
    """Keeps the last good parameters; `check` returns the parameters to continue from."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    max_accuracy_drop: float
    best_accuracy: float = -math.inf
    good: Params | None = None
    good_round: int = 0

    def evaluate(self, params: Params) -> tuple[float, float]:
        with torch.no_grad():
            logits = functional_call(self.model, params, (self.x,))
            loss = float(F.cross_entropy(logits, self.y))
            accuracy = float((logits.argmax(1) == self.y).float().mean())
        return loss, accuracy

    def check(self, round_no: int, params: Params) -> tuple[Params, dict | None]:
        """(parameters to keep, a rollback event or None)."""
        loss, accuracy = self.evaluate(params)
        bad_params = not all(bool(torch.isfinite(p).all()) for p in params.values())
        why = None
        if bad_params or not math.isfinite(loss):
            why = "loss not finite"
        elif accuracy < self.best_accuracy - self.max_accuracy_drop:
            why = (f"public accuracy {accuracy:.3f} fell more than {self.max_accuracy_drop:g} "
                   f"below the best {self.best_accuracy:.3f}")
        if why is not None and self.good is not None:
            event = {"round": round_no, "rolled_back_to": self.good_round, "reason": why}
            return {n: p.clone() for n, p in self.good.items()}, event
        self.best_accuracy = max(self.best_accuracy, accuracy)
        self.good = {n: p.clone() for n, p in params.items()}
        self.good_round = round_no
        return params, None
