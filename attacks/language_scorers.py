"""Scorers of a fine-tuned language model: utility, the LOSS attack on sequences, the text attacks
(Min-K%, zlib, reference-model ratio) and the blind text-only baseline beside them; the canary
scorers are in attacks/canary_scorers.py.

Metric names follow the shared conventions: scorer "utility" (perplexity, next_token_accuracy, or
accuracy for classification), scorer "loss" (membership_rows). Each is an entry of
privbench/scoring.py's SCORERS (context "language"), beside the shared claim scorer.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from transformers import PreTrainedTokenizerBase

from privbench.attacks import LossAttack
from privbench.attacks.membership.lm_inputs import TrainerInputs
from privbench.attacks.membership.metrics import membership_rows
from privbench.audit.canaries import CanarySet
from privbench.audit.lm_canaries import SecretCanaries
from privbench.data.partition import ClientShard
from privbench.data.text_clients import TextData
from privbench.data.tokens import Examples
from privbench.query.sequences import classifier_logits, model_at, sequence_stats
from privbench.run.observations import TrainedModel
from privbench.run.results import MetricRow
from privbench.spec.suite import Cell
from privbench.stats import clopper_pearson


@dataclass
class LMContext:
    """Everything an LM scorer may read about one trained cell."""

    cell: Cell
    data: TextData
    tokenizer: PreTrainedTokenizerBase
    train: Examples
    test: Examples
    trained: TrainedModel
    audit: SecretCanaries | None = None  # the black-box audit's secret canaries, if planted
    shards: list[ClientShard] = field(default_factory=list)  # each real client's examples
    canaries: CanarySet | None = None  # the white-box audit's canary clients, if planted
    inputs: TrainerInputs | None = None  # what the trainer was given (shadow LMs reuse it)
    run_dir: Path | None = None  # where cached work (shadow models) may be stored

    @property
    def key(self) -> str:
        return self.cell.key

    @property
    def task(self) -> str:
        return self.cell.spec.task

    @property
    def n_train_records(self) -> int:
        """The real training examples (the DP-SGD plan's shard size of a one-client run)."""
        return len(self.train)


def example_losses(ctx: LMContext, ex: Examples) -> np.ndarray:
    """Per-example loss of the released model: mean token NLL, or cross-entropy for classifiers."""
    model = ctx.trained.model
    if ctx.task == "causal_lm":
        nll, count, _ = sequence_stats(model, ex.ids, ex.weights)
        return (nll / count.clamp(min=1)).numpy()
    logits = classifier_logits(model, ex.ids, ex.weights)
    return F.cross_entropy(logits, ex.labels, reduction="none").double().numpy()


def lm_utility_scorer(ctx: LMContext) -> list[MetricRow]:
    """Held-out perplexity and next-token accuracy (causal LM) or accuracy (classifier)."""
    model, test = ctx.trained.model, ctx.test
    if ctx.task == "causal_lm":
        nll, count, correct = sequence_stats(model, test.ids, test.weights)
        tokens = float(count.sum())
        # Interval over sequences: a t-interval on the mean per-token NLL, mapped through exp.
        per_token = float(nll.sum()) / tokens
        se = _ratio_standard_error(nll.numpy(), count.numpy())
        t = stats.t.ppf(0.975, max(1, len(nll) - 1))
        details = {"n_sequences": len(nll), "n_tokens": tokens, "interval": "t 95% (delta)"}
        acc_k = int(correct.sum())
        acc_lo, acc_hi = clopper_pearson(acc_k, int(tokens))
        return [
            MetricRow(ctx.key, "utility", "perplexity", _exp(per_token),
                      _exp(per_token - t * se), _exp(per_token + t * se), None, details),
            MetricRow(ctx.key, "utility", "next_token_accuracy", acc_k / tokens, acc_lo, acc_hi,
                      None, {**details, "interval": "Clopper-Pearson 95% (tokens)"}),
            MetricRow(ctx.key, "utility", "loss", per_token, per_token - t * se,
                      per_token + t * se, None, details),
        ]
    logits = classifier_logits(model, test.ids, test.weights)
    right = int((logits.argmax(dim=1) == test.labels).sum())
    lo, hi = clopper_pearson(right, len(test))
    loss = F.cross_entropy(logits, test.labels).item()
    return [MetricRow(ctx.key, "utility", "accuracy", right / len(test), lo, hi, None,
                      {"n": len(test), "interval": "Clopper-Pearson 95%"}),
            MetricRow(ctx.key, "utility", "loss", loss, None, None, None, {"n": len(test)})]


def membership_split(ctx: LMContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The membership attacks' members (a seeded sample of training messages, no canaries) and
    non-members (as many held-out messages): indices into ctx.train and ctx.test."""
    pool = np.flatnonzero(~ctx.data.train_is_canary)
    rng = np.random.default_rng([ctx.cell.spec.seed, 0x1055])
    n = min(len(pool), len(ctx.test))
    members = torch.from_numpy(np.sort(rng.choice(pool, size=n, replace=False)))
    nonmembers = torch.from_numpy(np.sort(rng.choice(len(ctx.test), size=n, replace=False)))
    return members, nonmembers


def lm_loss_attack_scorer(ctx: LMContext) -> list[MetricRow]:
    """LOSS attack on whole sequences, on the `membership_split` members and non-members."""
    if not ctx.cell.spec.attacks.loss.enabled:
        return []
    attack = LossAttack()
    members, nonmembers = membership_split(ctx)
    s_in = attack.score(example_losses(ctx, ctx.train.subset(members)))
    s_out = attack.score(example_losses(ctx, ctx.test.subset(nonmembers)))
    rows = membership_rows(ctx.key, attack.name, attack.surface, s_in, s_out)
    blind = _blind_auc(*_texts(ctx, members, nonmembers), ctx.cell.spec.seed,
                       _clients(ctx, members, nonmembers))
    for row in rows:
        if row.metric == "auc":
            row.details["blind_auc"] = blind
    return rows


MIN_K = 0.2  # Min-K%: the mean of the 20% least likely tokens (Shi et al. 2024)


def lm_text_attacks_scorer(ctx: LMContext) -> list[MetricRow]:
    """Min-K%, zlib ratio and the reference ratio (the model before fine-tuning as reference)
    on the LOSS attack's members and non-members of a causal LM; each AUC row carries the
    blind text-only baseline's AUC on the same texts (`lm_blind_baseline_scorer`)."""
    from privbench.attacks.membership.lm import (
        min_k_score,
        reference_ratio_score,
        zlib_ratio_score,
    )

    if ctx.task != "causal_lm" or not ctx.cell.spec.attacks.loss.enabled:
        return []
    members, nonmembers = membership_split(ctx)
    texts_in, texts_out = _texts(ctx, members, nonmembers)
    lp_in, lp_out = (_token_logprobs(ctx.trained.model, ctx.train.subset(members)),
                     _token_logprobs(ctx.trained.model, ctx.test.subset(nonmembers)))
    scores = {"min_k": (min_k_score(lp_in, MIN_K), min_k_score(lp_out, MIN_K)),
              "zlib": (zlib_ratio_score(lp_in, texts_in), zlib_ratio_score(lp_out, texts_out))}
    reference = _model_before_fine_tuning(ctx)
    if reference is not None:
        scores["ref_ratio"] = (
            reference_ratio_score(lp_in, _token_logprobs(reference, ctx.train.subset(members))),
            reference_ratio_score(lp_out, _token_logprobs(reference,
                                                          ctx.test.subset(nonmembers))))
    blind = _blind_auc(texts_in, texts_out, ctx.cell.spec.seed,
                       _clients(ctx, members, nonmembers))
    rows = []
    for name, (s_in, s_out) in scores.items():
        rows += membership_rows(ctx.key, name, "final_model", s_in, s_out)
    for row in rows:
        if row.metric == "auc":
            row.details["blind_auc"] = blind
            if row.scorer == "min_k":
                row.details["k"] = MIN_K
            if row.scorer == "ref_ratio":
                row.details["reference"] = "the model before fine-tuning (public)"
    return rows


def lm_blind_baseline_scorer(ctx: LMContext) -> list[MetricRow]:
    """The blind baseline (Das et al. 2024): a text-only classifier of the same members and
    non-members, no model queried. An attack that does not beat it reads a distribution shift
    between the two sets, not the model's memory."""
    if not ctx.cell.spec.attacks.loss.enabled:
        return []
    split = membership_split(ctx)
    texts_in, texts_out = _texts(ctx, *split)
    s_in, s_out = _blind(tuple(texts_in), tuple(texts_out), ctx.cell.spec.seed,
                         _clients(ctx, *split))
    return membership_rows(ctx.key, "blind", "text only", s_in, s_out)


def _texts(ctx: LMContext, members: torch.Tensor, nonmembers: torch.Tensor
           ) -> tuple[list[str], list[str]]:
    return ([ctx.data.train_texts[int(i)] for i in members],
            [ctx.data.test_texts[int(i)] for i in nonmembers])


def _clients(ctx: LMContext, members: torch.Tensor, nonmembers: torch.Tensor
             ) -> tuple[int, ...] | None:
    """The members' then the non-members' clients (the blind baseline's fold groups), or None
    when the held-out messages carry no client."""
    if ctx.data.test_clients is None:
        return None
    return tuple(int(c) for c in np.r_[ctx.data.train_clients[members.numpy()],
                                       ctx.data.test_clients[nonmembers.numpy()]])


def _blind_auc(texts_in: list[str], texts_out: list[str], seed: int,
               clients: tuple[int, ...] | None = None) -> float:
    """The blind baseline's AUC, as `lm_blind_baseline_scorer` scores it (same folds)."""
    from privbench.attacks.membership.roc import auc

    return float(auc(*_blind(tuple(texts_in), tuple(texts_out), seed, clients)))


@functools.lru_cache(maxsize=4)
def _blind(texts_in: tuple[str, ...], texts_out: tuple[str, ...], seed: int,
           clients: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The blind classifier's out-of-fold scores, fitted once per cell's texts (the LOSS rows,
    the text attacks' rows and the baseline's own rows all read them); folds grouped by client
    when the clients are known (`blind_scores`)."""
    from privbench.attacks.membership.lm import blind_scores

    return blind_scores(texts_in, texts_out, seed=seed, groups=clients)


def _token_logprobs(model: torch.nn.Module, ex: Examples) -> list[np.ndarray]:
    """Each example's real tokens' log-probabilities (as trained: truncated, with BOS)."""
    from privbench.query.causal_lm import sequence_logprobs

    lengths = (ex.weights.sum(dim=1) + 1).long().tolist()
    return sequence_logprobs(model, [ex.ids[i, :n].tolist() for i, n in enumerate(lengths)])


def _model_before_fine_tuning(ctx: LMContext) -> torch.nn.Module | None:
    """The released model with its trainable parameters set back to where training started
    (public: the pretrained weights, and LoRA's initial adapters), or None if not recorded."""
    initial = ctx.trained.observations.initial_params
    return model_at(ctx.trained.model, initial) if initial else None


def _exp(x: float) -> float:
    """exp that saturates at inf (a destroyed model's perplexity) instead of raising."""
    return math.exp(x) if x < 709 else math.inf


def _ratio_standard_error(num: np.ndarray, den: np.ndarray) -> float:
    """Standard error of sum(num)/sum(den) over sequences (delta method)."""
    n = len(num)
    if n < 2:
        return 0.0
    r = num.sum() / den.sum()
    resid = num - r * den
    return float(math.sqrt(n / (n - 1) * (resid**2).sum()) / den.sum())
