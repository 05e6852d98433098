"""Pieces of the LM update inversion (attacks/inversion/lm_updates.py): the bag of words of tied
or untied embeddings, the noise levels its thresholds clear, each client's true sequences and the
per-sequence scores of a recovery."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from privbench.attacks.inversion.metrics import rouge_n, text_example
from privbench.attacks.inversion.text import embedding_rows
from privbench.data.tokens import Examples, attention_mask, sequence_tensors


def bag_of_words(embedding_grad: torch.Tensor, tied: bool, noise_std: float = 0.0,
                 prior: torch.Tensor | None = None) -> set[int]:
    """The batch's tokens from the input-embedding gradient (V, d).

    Untied: the exactly non-zero rows (`embedding_rows`). Tied: the output layer's gradient
    (softmax minus one-hot, times the last hidden states) touches every row. A token outside
    the batch collects only its predicted probability there, so its row norm is about its mean
    next-token probability `prior` times a hidden state's norm; a token of the batch is also a
    target (every real token is predicted), which adds (1 - p) times a hidden state per
    occurrence. The log of norm / prior is then flat over the vocabulary but for the batch's
    tokens on top, split off by Otsu's threshold (the split that maximises the between-group
    variance), among the rows above the noise floor.

    Args:
        embedding_grad: the (pseudo-)gradient of the input embedding, one row per token.
        tied: whether the embedding is also the output layer.
        noise_std: the per-coordinate noise level of the update (0: none).
        prior: (V,) the model's mean next-token distribution on public text (tied only).
    Returns:
        The recovered token ids.
    """
    if not tied:
        return embedding_rows(embedding_grad, noise_std)
    if prior is None:
        raise ValueError("tied embeddings: give the model's next-token prior on public text")
    norms = embedding_grad.double().norm(dim=1).numpy()
    floor = noise_std * (math.sqrt(embedding_grad.shape[1]) + 5.0)
    above = np.flatnonzero(norms > floor)
    if len(above) < 2:
        return {int(i) for i in above}
    score = np.log(norms[above]) - np.log(prior.double().clamp(min=1e-12).numpy()[above])
    return {int(i) for i in above[score > _otsu(score)]}


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of a one-dimensional sample (midpoint of the best split)."""
    v = np.sort(values)
    n = len(v)
    csum = np.cumsum(v)
    k = np.arange(1, n)
    m0 = csum[:-1] / k
    m1 = (csum[-1] - csum[:-1]) / (n - k)
    between = (k / n) * (1 - k / n) * (m0 - m1) ** 2
    i = int(np.argmax(between))
    return float((v[i] + v[i + 1]) / 2)


@torch.no_grad()
def next_token_prior(model: torch.nn.Module, tokenizer, texts: list[str],
                     max_length: int) -> torch.Tensor:
    """The model's next-token distribution averaged over every predicted position of public
    `texts` (V,): what a token's output-layer gradient row collects when it is no target.

    Args:
        model, tokenizer: the round's LM and its tokenizer; texts: public text;
        max_length: tokens per text.
    """
    ids, weights = sequence_tensors(tokenizer, texts, max_length)
    probs = model(ids, attention_mask=attention_mask(weights)).logits[:, :-1].softmax(-1)
    return (probs * weights[..., None]).sum(dim=(0, 1)) / weights.sum()


def robust_std(t: torch.Tensor) -> float:
    """The noise std of a tensor whose coordinates are mostly noise: 1.4826 x the median
    absolute deviation (a low-rank signal moves few of the order statistics)."""
    x = t.double().flatten()
    return float(1.4826 * (x - x.median()).abs().median())


def rounding_std(start: torch.Tensor) -> float:
    """The float32 rounding in an update recorded as (trained - start): each coordinate's
    error is uniform within half a unit in the last place of the parameter, std ulp / sqrt(12)."""
    eps = torch.finfo(start.dtype).eps
    return float((start.double().abs() * eps).pow(2).mean().sqrt() / math.sqrt(12))


def client_sequences(ex: Examples, idx) -> list[list[int]]:
    """The real token ids (begin token first, no padding) of examples `idx` of `ex`.

    Args:
        ex: the tokenised examples; idx: the examples' indices.
    """
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    lengths = (ex.weights[idx].sum(dim=1) + 1).long().tolist()
    return [ex.ids[int(i), :n].tolist() for i, n in zip(idx, lengths, strict=True)]


def per_sequence_scores(recovered: list[list[int]], originals: list[list[int]]
                        ) -> list[dict[str, float]]:
    """Exact match, ROUGE-1 and ROUGE-2 of each original sequence against the recovery matched
    to it (Hungarian on ROUGE-1 + ROUGE-2); an unmatched original scores 0.

    Args:
        recovered: the attack's token sequences; originals: the client's true ones.
    """
    out = [{"exact_match": 0.0, "rouge1": 0.0, "rouge2": 0.0} for _ in originals]
    if not recovered or not originals:
        return out
    gain = np.array([[rouge_n(c, o, 1) + rouge_n(c, o, 2) for c in recovered] for o in originals])
    for o, c in zip(*linear_sum_assignment(-gain), strict=True):
        out[o] = {"exact_match": float(list(recovered[c]) == list(originals[o])),
                  "rouge1": rouge_n(recovered[c], originals[o], 1),
                  "rouge2": rouge_n(recovered[c], originals[o], 2)}
    return out


def decoded_pairs(tokenizer, recovered: list[list[int]], originals: list[list[int]]
                  ) -> list[dict[str, list[str]]]:
    """Each original beside its best recovery, as decoded tokens (the report's text pairs).

    Args:
        tokenizer: the LM's tokenizer; recovered, originals: token sequences.
    """
    ids = {t for s in [*recovered, *originals] for t in s}
    vocab = {t: tokenizer.decode([t]) for t in ids}
    return text_example(recovered, originals, vocab)
