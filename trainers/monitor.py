"""The training monitor: after each round, the global model's loss and accuracy on public data
(the population pool, never a client's records, so watching costs no privacy). A non-finite loss
or an accuracy drop beyond the margin rolls the model back to the last good round.

It reads the model through its adapter: the loss is the adapter's per-example loss, the accuracy
that of the adapter's `accuracy(params, batch)` where it has one, else of the argmax of its
outputs against `batch["y"]` (a classifier); without public data only the non-finite check runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from privbench.models.adapter import Batch, ModelAdapter, Params


def public_accuracy(adapter: ModelAdapter, params: Params, batch: Batch) -> float:
    """The accuracy of `params` on `batch`: the adapter's own measure, or a classifier's.

    Args:
        adapter: the model; params: the parameters; batch: the public records.
    """
    own = getattr(adapter, "accuracy", None)
    if own is not None:
        return float(own(params, batch))
    logits = adapter.outputs(params, batch)
    return float((logits.argmax(1) == batch["y"]).float().mean())


@dataclass
class RollbackMonitor:
    """Keeps the last good parameters; `check` returns the parameters to continue from."""

    adapter: ModelAdapter
    public: Batch | None
    max_accuracy_drop: float
    best_accuracy: float = -math.inf
    good: Params | None = None
    good_round: int = 0

    def evaluate(self, params: Params) -> tuple[float, float]:
        """(loss, accuracy) on the public data; (0, -inf) without public data."""
        if self.public is None:
            return 0.0, -math.inf
        with torch.no_grad():
            loss = float(self.adapter.per_example_loss(params, self.public).mean())
            accuracy = public_accuracy(self.adapter, params, self.public)
        return loss, accuracy

    def check(self, round_no: int, params: Params) -> tuple[Params, dict | None]:
        """(parameters to keep, a rollback event or None).

        Args:
            round_no: the round just done; params: the model after it.
        """
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
