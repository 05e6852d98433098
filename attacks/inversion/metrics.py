"""Inversion metrics: PSNR and SSIM after Hungarian matching, label and token scores, ROUGE-1/2.

Every per-batch score is averaged over attacked batches (or clients) by `summarise`, which gives
the mean and its Student-t interval (privbench.stats.mean_interval), so each number carries its
uncertainty over at least the batches that were attacked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from privbench.stats import clopper_pearson, mean_interval


def psnr(reconstruction: np.ndarray, original: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio in dB, per image (leading axis); exact copies give +inf.

    Args:
        reconstruction, original: images (N, ...); data_range: the pixels' range.
    """
    err = ((np.asarray(reconstruction, np.float64) - np.asarray(original, np.float64)) ** 2)
    mse = err.reshape(err.shape[0], -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(reconstruction: np.ndarray, original: np.ndarray, data_range: float = 1.0,
         window: int = 7, sigma: float = 1.5) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) per image of shape (N, H, W); Gaussian window,
    valid positions only (an 8x8 digit gives a 2x2 map), K1 = 0.01, K2 = 0.03.

    Args:
        reconstruction, original: (N, H, W); data_range: the pixels' range;
        window, sigma: the Gaussian window's size (cut to the image) and width.
    """
    x = torch.as_tensor(np.asarray(reconstruction, np.float64))[:, None]
    y = torch.as_tensor(np.asarray(original, np.float64))[:, None]
    size = min(window, x.shape[-1], x.shape[-2])
    w = _gaussian_window(size, sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    vx = F.conv2d(x * x, w) - mx**2
    vy = F.conv2d(y * y, w) - my**2
    cxy = F.conv2d(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(start_dim=1).mean(dim=1).numpy()


def hungarian_match(reconstructions: np.ndarray, originals: np.ndarray) -> np.ndarray:
    """For each original, the index of its reconstruction under the assignment that minimises
    total squared error (Hungarian algorithm); more reconstructions than originals is allowed.

    Args:
        reconstructions: (R, ...); originals: (N, ...), N <= R.
    Returns:
        (N,) indices into `reconstructions`.
    """
    r = np.asarray(reconstructions, np.float64).reshape(len(reconstructions), -1)
    o = np.asarray(originals, np.float64).reshape(len(originals), -1)
    cost = ((o[:, None, :] - r[None, :, :]) ** 2).mean(axis=2)
    rows, cols = linear_sum_assignment(cost)
    match = np.empty(len(o), dtype=np.int64)
    match[rows] = cols
    return match


def image_scores(reconstructions: np.ndarray, originals: np.ndarray,
                 shape: tuple[int, int]) -> dict[str, float]:
    """Mean PSNR (capped at 100 dB for exact copies) and SSIM of one batch after matching.

    Args:
        reconstructions, originals: flat images; shape: (H, W) (pixels clipped to [0, 1]).
    """
    match = hungarian_match(reconstructions, originals)
    rec = np.clip(np.asarray(reconstructions)[match], 0.0, 1.0).reshape(-1, *shape)
    ori = np.asarray(originals).reshape(-1, *shape)
    return {"psnr": float(np.minimum(psnr(rec, ori), 100.0).mean()),
            "ssim": float(ssim(rec, ori).mean())}


def label_accuracy(predicted: Sequence[int], true: Sequence[int]) -> float:
    """Fraction of the batch's labels recovered, as multisets (order carries no information).

    Args:
        predicted, true: the labels recovered and the batch's.
    """
    overlap = sum((Counter(predicted) & Counter(true)).values())
    return overlap / max(len(true), 1)


def token_precision_recall(recovered: set[int], true: set[int]) -> tuple[float, float]:
    """Precision and recall of a recovered set of distinct tokens.

    Args:
        recovered, true: sets of token ids.
    """
    hit = len(recovered & true)
    return hit / max(len(recovered), 1), hit / max(len(true), 1)


def _ngrams(tokens: Sequence[int], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(candidate: Sequence[int], reference: Sequence[int], n: int) -> float:
    """ROUGE-N F1 between two token sequences (clipped n-gram overlap).

    Args:
        candidate, reference: token sequences; n: the n-gram size.
    """
    c, r = _ngrams(candidate, n), _ngrams(reference, n)
    overlap = sum((c & r).values())
    if overlap == 0:
        return 0.0
    p, rec = overlap / sum(c.values()), overlap / sum(r.values())
    return 2 * p * rec / (p + rec)


def text_scores(recovered: list[list[int]], originals: list[list[int]]) -> dict[str, float]:
    """Exact match, ROUGE-1 and ROUGE-2 of one batch after Hungarian matching on ROUGE-1 + ROUGE-2.

    exact_match is 1 when every original sequence is recovered exactly, else 0; unmatched
    originals (fewer recoveries than sequences) score 0 ROUGE.

    Args:
        recovered, originals: token sequences.
    """
    if not recovered:
        return {"exact_match": 0.0, "rouge1": 0.0, "rouge2": 0.0}
    gain = np.array([[rouge_n(c, o, 1) + rouge_n(c, o, 2) for c in recovered] for o in originals])
    rows, cols = linear_sum_assignment(-gain)
    r1 = sum(rouge_n(recovered[c], originals[o], 1) for o, c in zip(rows, cols, strict=True))
    r2 = sum(rouge_n(recovered[c], originals[o], 2) for o, c in zip(rows, cols, strict=True))
    exact = (len(rows) == len(originals)
             and all(list(recovered[c]) == list(originals[o])
                     for o, c in zip(rows, cols, strict=True)))
    n = len(originals)
    return {"exact_match": float(exact), "rouge1": r1 / n, "rouge2": r2 / n}


def text_example(rec: list[list[int]], true: list[list[int]], vocab: Any
                 ) -> list[dict[str, list[str]]]:
    """Each original sequence beside the recovery that matches it best (greedy on ROUGE-1 +
    ROUGE-2), as tokens.

    Args:
        rec: the recovered token-id sequences.
        true: the original token-id sequences.
        vocab: token id -> its text (a list, or a dict of the ids present).
    Returns:
        One {"original", "recovered"} pair of token lists per original.
    """
    pairs = []
    used: set[int] = set()
    for t in true:
        best = max((j for j in range(len(rec)) if j not in used),
                   key=lambda j: rouge_n(rec[j], t, 1) + rouge_n(rec[j], t, 2), default=None)
        if best is not None:
            used.add(best)
        pairs.append({"original": [vocab[i] for i in t],
                      "recovered": [vocab[i] for i in rec[best]] if best is not None else []})
    return pairs


def summarise(per_batch: list[dict[str, float]], alpha: float = 0.05
              ) -> dict[str, tuple[float, float, float]]:
    """Mean and (1 - alpha) interval of each metric over the attacked batches: Clopper-Pearson
    when every value is 0 or 1 (a success rate), else Student-t.

    Args:
        per_batch: each batch's metrics; alpha: one minus the confidence.
    Returns:
        metric -> (mean, low, high).
    """
    out = {}
    for m in per_batch[0] if per_batch else []:
        values = np.array([b[m] for b in per_batch], dtype=np.float64)
        if np.isin(values, (0.0, 1.0)).all():
            lo, hi = clopper_pearson(int(values.sum()), len(values), alpha)
            out[m] = (float(values.mean()), lo, hi)
        else:
            out[m] = mean_interval(values, alpha)
    return out
