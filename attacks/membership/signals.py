"""Per-example signals from logits, computed stably: what LiRA and RMIA read from any model.

Arrays may carry leading model axes: logits (..., N, C) with labels (N,) give signals (..., N).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp


def true_class_probability(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Softmax probability of each record's true class: Pr(x | theta) in RMIA."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    return np.exp(_gather(logp, labels))


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's logit-scaled confidence phi = log(p / (1 - p)) of the true class.

    Computed as z_y - logsumexp_{j != y} z_j, which stays finite where p rounds to 1.
    """
    z = np.asarray(logits, dtype=np.float64)
    true = _gather(z, labels)
    others = z.copy()
    np.put_along_axis(others, _label_index(labels, z.ndim), -np.inf, axis=-1)
    return true - logsumexp(others, axis=-1)


def _label_index(labels: np.ndarray, ndim: int) -> np.ndarray:
    idx = np.asarray(labels, dtype=np.int64)[..., None]
    return idx.reshape((1,) * (ndim - 2) + idx.shape)


def _gather(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    idx = np.broadcast_to(_label_index(labels, values.ndim), (*values.shape[:-1], 1))
    return np.take_along_axis(values, idx, axis=-1)[..., 0]
