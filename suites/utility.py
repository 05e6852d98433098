"""The utility suite: how useful a trained classifier is on held-out data."""

from __future__ import annotations

import numpy as np
from torch import nn

from privbench.query.classifier import logits, per_example_losses
from privbench.run.results import MetricRow
from privbench.stats import clopper_pearson, mean_interval

# A test loss this many times the best constant predictor's has exploded (e.g. 3.6e5 against
# 2.3 on ten classes): the model is worse than predicting the label frequencies.
EXPLODED_LOSS_FACTOR = 10.0


def classification_utility(experiment: str, model: nn.Module, x_test: np.ndarray,
                           y_test: np.ndarray) -> list[MetricRow]:
    """Test accuracy (Clopper-Pearson interval), mean test loss (t interval), and whether the
    model's utility collapsed (see `collapse_reason`)."""
    pred = logits(model, x_test).argmax(dim=1).numpy()
    correct = int((pred == y_test).sum())
    n = len(y_test)
    lo, hi = clopper_pearson(correct, n)
    loss, loss_lo, loss_hi = mean_interval(per_example_losses(model, x_test, y_test))
    details = {"n": n, "split": "test"}
    freq = np.bincount(y_test) / n
    chance = float(freq.max())  # the best constant predictor's accuracy
    prior_loss = float(-(freq[freq > 0] * np.log(freq[freq > 0])).sum())  # and its loss
    reason = collapse_reason(lo, chance, loss, prior_loss)
    return [
        MetricRow(experiment, "utility", "accuracy", correct / n, lo, hi, None, details),
        MetricRow(experiment, "utility", "loss", loss, loss_lo, loss_hi, None, details),
        MetricRow(experiment, "utility", "collapsed", float(reason is not None), None, None,
                  None, {"reason": reason or "", "chance_accuracy": chance,
                         "constant_predictor_loss": prior_loss, **details}),
    ]


def collapse_reason(accuracy_low: float, chance: float, loss: float,
                    constant_loss: float) -> str | None:
    """Why a trained classifier is useless, or None when it learned something.

    Args:
        accuracy_low: the lower end of the test accuracy's 95% interval.
        chance: the accuracy of always predicting the most frequent test label.
        loss: the mean test loss.
        constant_loss: the loss of predicting the test label frequencies.

    Returns:
        "accuracy at chance" when the interval does not exclude the constant predictor,
        "loss exploded" when the test loss is over EXPLODED_LOSS_FACTOR times the constant
        predictor's (or not finite), both joined when both hold, else None.
    """
    reasons = []
    if accuracy_low <= chance:
        reasons.append(f"accuracy at chance ({chance:.2f})")
    if not np.isfinite(loss) or loss > EXPLODED_LOSS_FACTOR * max(constant_loss, 1e-12):
        reasons.append(f"loss exploded ({loss:.3g} vs {constant_loss:.3g} for a constant "
                       "predictor)")
    return "; ".join(reasons) or None
