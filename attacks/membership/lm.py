"""Membership attacks on language models from per-token log-probabilities, and a blind baseline.

- LOSS: minus the mean token negative log-likelihood.
- Min-K% (Shi et al. 2024): the mean of the k% lowest token log-probabilities.
- zlib ratio (Carlini et al. 2021): minus log-perplexity divided by the zlib-compressed length.
- Reference ratio (Carlini et al. 2021): the reference model's NLL minus the target's.
- Blind (Das et al. 2024; MIMIR): a bag-of-character-n-grams classifier that sees only the text,
  scored out of fold. If it rivals an attack, the attack is reading a distribution shift between
  the member and non-member texts, not the model's memory.
Scores are higher for "member".
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold


def mean_nll(token_logprobs: Sequence[np.ndarray]) -> np.ndarray:
    """Mean negative log-likelihood (log-perplexity) of each text."""
    return np.array([-float(np.mean(t)) if len(t) else np.nan for t in token_logprobs])


def loss_score(token_logprobs: Sequence[np.ndarray]) -> np.ndarray:
    return -mean_nll(token_logprobs)


def min_k_score(token_logprobs: Sequence[np.ndarray], k: float = 0.2) -> np.ndarray:
    """Mean of the ceil(k * n) lowest token log-probabilities of each text."""
    if not 0 < k <= 1:
        raise ValueError(f"k = {k}: must be in (0, 1], e.g. 0.2 for Min-20%")
    out = []
    for t in token_logprobs:
        t = np.sort(np.asarray(t, dtype=np.float64))
        out.append(float(t[: max(1, int(np.ceil(k * len(t))))].mean()) if len(t) else np.nan)
    return np.array(out)


def zlib_entropy(texts: Sequence[str]) -> np.ndarray:
    """Length in bytes of each text compressed with zlib: a model-free measure of its entropy."""
    return np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts], dtype=np.float64)


def zlib_ratio_score(token_logprobs: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
    return -mean_nll(token_logprobs) / zlib_entropy(texts)


def reference_ratio_score(token_logprobs: Sequence[np.ndarray],
                          reference_logprobs: Sequence[np.ndarray]) -> np.ndarray:
    return mean_nll(reference_logprobs) - mean_nll(token_logprobs)


def blind_scores(member_texts: Sequence[str], nonmember_texts: Sequence[str], *,
                 folds: int = 5, seed: int = 0,
                 groups: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold "member" probabilities of a text-only classifier (no model queried).

    With `groups` (each text's client, members first) the folds keep a client's texts together
    (stratified group folds), so the classifier is never fitted on texts of the client it
    scores. Per-client folds matter when each client's messages are split into members and
    non-members: a fold that leaves one of a client's members out leaves that client's texts
    in training with one member fewer than non-members, and its own words then predict
    "non-member" (an AUC of 0.37 to 0.46 on random splits of the llm suite's messages, where
    the grouped folds give 0.48 to 0.49).

    Args:
        member_texts, nonmember_texts: the two sets' texts.
        folds: cross-fitting folds (at most the smaller set's size, and the number of groups).
        seed: the folds' shuffle seed.
        groups: one group (client) per text, members' then non-members'; None: plain
            stratified folds.
    Returns:
        (member scores, non-member scores).
    """
    texts = list(member_texts) + list(nonmember_texts)
    y = np.r_[np.ones(len(member_texts)), np.zeros(len(nonmember_texts))]
    folds = int(min(folds, len(member_texts), len(nonmember_texts)))
    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(texts):
            raise ValueError(f"blind baseline: {len(groups)} groups for {len(texts)} texts")
        folds = min(folds, len(np.unique(groups)))
    if folds < 2:
        raise ValueError("the blind baseline needs at least 2 member and 2 non-member texts "
                         "(and 2 clients when grouped)")
    scores = np.zeros(len(texts))
    if groups is None:
        split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(
            np.zeros(len(y)), y)
    else:
        split = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(
            np.zeros(len(y)), y, groups)
    for train, test in split:
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)
        clf = LogisticRegression(max_iter=1000, C=1.0)
        clf.fit(vec.fit_transform([texts[i] for i in train]), y[train])
        scores[test] = clf.predict_proba(vec.transform([texts[i] for i in test]))[:, 1]
    return scores[: len(member_texts)], scores[len(member_texts):]
