"""Text inversion of a fine-tuned language model's real client updates: bag of words and DAGER
on the updates the one trainer recorded for the model the cell trains (attacks.inversion.rounds),
with the cell's tokenizer, the round's global model and each client's own training examples.

What an update gives: with local SGD, one step on one batch makes the update -lr times the
batch's gradient, so both attacks are exact (DAGER while the batch has fewer tokens than the
width). Several local steps sum gradients taken at moving parameters: the spans DAGER tests drift
from the round's model, and recovery degrades (measured: details carry each client's steps).
Adam's update is lr m / (sqrt(v) + eps): at one step about lr sign(g), which keeps the zero
rows of an untied embedding but not the magnitudes that the norm split or the spans need.
Under secure aggregation the server holds the round's sum alone: both attacks run on the sum,
scored against the whole cohort's examples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from privbench.attacks.inversion.client_noise import with_client_noise
from privbench.attacks.inversion.lm_signals import UpdateSignals, update_signals
from privbench.attacks.inversion.lm_text import (
    bag_of_words,
    client_sequences,
    decoded_pairs,
    next_token_prior,
    per_sequence_scores,
    robust_std,
    rounding_std,
)
from privbench.attacks.inversion.metrics import summarise, text_scores, token_precision_recall
from privbench.attacks.inversion.text import dager
from privbench.attacks.language_scorers import LMContext
from privbench.query.sequences import model_at
from privbench.rng import generator
from privbench.run.results import MetricRow
from privbench.stats import clopper_pearson

Params = dict[str, torch.Tensor]
EXAMPLES = 4  # attacked clients whose text (original beside recovered) the details keep
SCORED_ON = ("each sequence without its begin token and its last token: the last is the input "
             "of no predicted position, so no layer's input span holds it (the bag of words, "
             "from the output side, does)")


def lm_inversion_scorer(ctx: LMContext) -> list[MetricRow]:
    """Bag of words and DAGER on the recorded client updates (or the secure sum) of a causal LM.

    Args:
        ctx: the trained LM cell (its observations hold the recorded rounds).
    Returns:
        inversion_signals rows (which attack each update allows, and why not), and when they
        run inversion_bow / inversion_dager rows per attacked client (surface client_updates)
        and their _aggregate rows on each round's sum (surface aggregates).
    """
    spec = ctx.cell.spec.attacks.inversion
    obs = ctx.trained.observations
    if not spec.enabled or ctx.task != "causal_lm":
        return []
    per_client = obs.exposes("client_updates") and bool(obs.client_updates)
    if not per_client and not (obs.exposes("aggregates") and obs.aggregates):
        return []
    sums = _round_sums(ctx, per_client)
    if not sums:
        return []
    first = next(iter(sums.values()))[0]
    signals = update_signals(ctx.trained.model, first, ctx.cell.spec.lm.finetune)
    common = _common(ctx, signals)
    rows = _signal_rows(ctx, signals, common)
    if signals.bow_reason and signals.dager_reason:
        return rows
    if per_client:
        targets = [(r, c, u) for r in sorted(obs.client_updates)
                   for c, u in sorted(obs.client_updates[r].items())
                   if _has_records(ctx, c)][: spec.clients]
        rows += _client_rows(ctx, signals, targets, common)
    rows += _aggregate_rows(ctx, signals, sums, common)
    return rows


def _has_records(ctx: LMContext, client: int) -> bool:
    """A client with training text (an audit's canary clients past the shards send a planted
    vector, not a gradient of text)."""
    return client < len(ctx.shards) and len(ctx.shards[client].indices) > 0


def _noise(ctx: LMContext) -> tuple[float, bool]:
    """(std of the noise this scorer adds to each update, whether the update already carries
    the DP noise: example-level DP-SGD and local DP noise inside the client)."""
    claim = ctx.trained.claim
    private = claim.noise_multiplier > 0
    inside = private and (claim.unit == "example" or claim.setting == "local")
    added = (claim.noise_multiplier * (claim.clip or 0.0)
             if ctx.cell.spec.attacks.inversion.noise == "client" and private and not inside
             else 0.0)
    return added, inside


def _common(ctx: LMContext, signals: UpdateSignals) -> dict[str, Any]:
    claim, train, lm = ctx.trained.claim, ctx.cell.spec.train, ctx.cell.spec.lm
    added, inside = _noise(ctx)
    if not claim.noise_multiplier:
        view = "the client's raw update (no DP)"
    elif inside:
        view = "the update with the DP noise the client added (DP-SGD or local DP)"
    elif added:
        view = "the clipped update plus noise N(0, (z C)^2) added before it leaves the client"
    else:
        view = ("the clipped update before the server adds central noise (central DP does not "
                "hide it)")
    return {"view": view, "noise": ctx.cell.spec.attacks.inversion.noise, "noise_std": added,
            "claimed_epsilon": claim.epsilon, "finetune": lm.finetune,
            "optimizer": lm.optimizer, "local_epochs": train.local_epochs,
            "tied_embeddings": signals.tied, "width": signals.width,
            "model": "the cell's trained model at the round's start (the server's copy)",
            "tokenizer": "the cell's tokenizer", "labels": "next tokens (language modelling)"}


def _signal_rows(ctx: LMContext, signals: UpdateSignals, common: dict[str, Any]
                 ) -> list[MetricRow]:
    table = signals.table()
    details = {**common, "recoverable": table, "tensors": signals.tensors}
    return [MetricRow(ctx.key, "inversion_signals", f"{key}_available",
                      float(entry["available"]), surface="client_updates",
                      details={**details, "reason": entry["reason"]} if i == 0
                      else {"reason": entry["reason"]})
            for i, (key, entry) in enumerate(zip(("bow", "dager"), table, strict=True))]


def _round_sums(ctx: LMContext, per_client: bool) -> dict[int, tuple[Params, list[int]]]:
    """Each recorded round's sum of the real clients' updates and those clients: the sum of
    the recorded updates, or (secure aggregation) the sum the server decoded."""
    obs = ctx.trained.observations
    out = {}
    for r in sorted(obs.client_updates if per_client else obs.aggregates):
        if per_client:
            clients = [c for c in sorted(obs.client_updates[r]) if _has_records(ctx, c)]
            if clients:
                ups = [obs.client_updates[r][c] for c in clients]
                out[r] = ({n: sum(u[n] for u in ups) for n in ups[0]}, clients)
        else:
            clients = [c for c in obs.cohorts.get(r, []) if _has_records(ctx, c)]
            if clients:
                out[r] = (obs.aggregates[r], clients)
    return out


class _Attacker:
    """The server's side: the round's model, the noise it must reckon with, and the attacks."""

    def __init__(self, ctx: LMContext, signals: UpdateSignals, seed_offset: int) -> None:
        self.ctx, self.signals = ctx, signals
        self.added, self.inside = _noise(ctx)
        self.gen = generator(ctx.cell.spec.seed, seed_offset)
        self.models: dict[int, torch.nn.Module] = {}
        self.priors: dict[int, torch.Tensor] = {}
        self.special = {t for t in (ctx.tokenizer.bos_token_id, ctx.tokenizer.pad_token_id)
                        if t is not None}

    def model(self, r: int) -> torch.nn.Module:
        if r not in self.models:
            self.models[r] = model_at(self.ctx.trained.model,
                                      self.ctx.trained.observations.round_params[r])
        return self.models[r]

    def prior(self, r: int) -> torch.Tensor:
        """The round model's next-token prior on the public corpus (the monitor's texts)."""
        if r not in self.priors:
            from privbench.data.text_corpus import public_corpus
            from privbench.models.lm_task import PUBLIC_TEXTS

            spec = self.ctx.cell.spec
            self.priors[r] = next_token_prior(self.model(r), self.ctx.tokenizer,
                                              public_corpus(PUBLIC_TEXTS, spec.seed + 1),
                                              spec.lm.max_length)
        return self.priors[r]

    def _std(self, r: int, name: str, grad: torch.Tensor, copies: int) -> float:
        """The noise level an attack's threshold must clear: the added noise, or (noise inside
        the update) its robust estimate, and at least the float32 rounding of the recorded
        difference of parameters."""
        start = self.ctx.trained.observations.round_params[r][name]
        level = self.added * math.sqrt(copies) or (robust_std(grad) if self.inside else 0.0)
        return max(level, rounding_std(start))

    def view(self, update: Params, copies: int = 1) -> Params:
        """The pseudo-gradient the server inverts: minus the update, with the noise added (a
        sum of `copies` updates carries the noise of each: std sqrt(copies) times)."""
        noised = with_client_noise(update, self.added * math.sqrt(copies), self.gen)
        return {n: -u for n, u in noised.items()}

    def attack(self, r: int, grads: Params, width: int, copies: int = 1
               ) -> tuple[set[int] | None, list[list[int]] | None]:
        """(bag of words or None, DAGER's sequences or None) on one pseudo-gradient (a sum of
        `copies` client updates)."""
        s = self.signals
        bow = dag = None
        if s.bow_reason is None:
            g = grads[s.embedding]
            bow = bag_of_words(g, s.tied, self._std(r, s.embedding, g, copies),
                               self.prior(r) if s.tied else None) - self.special
        if s.dager_reason is None:
            std = max(self._std(r, n, grads[n], copies) for n in s.dager)
            dag = dager(self.model(r), {n: grads[n] for n in s.dager}, max_len=width,
                        noise_std=std)
        return bow, dag


def _client_rows(ctx: LMContext, signals: UpdateSignals,
                 targets: list[tuple[int, int, Params]], common: dict[str, Any]
                 ) -> list[MetricRow]:
    attacker = _Attacker(ctx, signals, 0x1A8)
    train = ctx.cell.spec.train
    bow_scores, dager_scores, examples, steps, tokens = [], [], [], [], []
    for r, c, update in targets:
        seqs = client_sequences(ctx.train, ctx.shards[c].indices)
        bow, rec = attacker.attack(r, attacker.view(update), ctx.cell.spec.lm.max_length)
        true_tokens = {t for s in seqs for t in s[1:]} - attacker.special
        if bow is not None:
            p, rc = token_precision_recall(bow, true_tokens)
            bow_scores.append({"token_precision": p, "token_recall": rc})
        if rec is not None:
            rec, visible = [s[1:] for s in rec], _visible(seqs)
            dager_scores.append(text_scores(rec, visible))
            if len(examples) < EXAMPLES:
                examples.append(decoded_pairs(ctx.tokenizer, rec, visible))
        steps.append(_local_steps(ctx, len(ctx.shards[c].indices)))
        tokens.append(sum(len(s) for s in seqs))
    details = {**common, "n": len(targets), "unit": "attacked client",
               "rounds": sorted({r for r, _, _ in targets}),
               "local_steps": sorted(set(steps)), "batch_size": train.batch_size,
               "tokens_per_client": [min(tokens), max(tokens)] if tokens else [],
               "originals": "every training example of the attacked client"}
    rows = []
    if bow_scores:
        rows += _rows(ctx.key, "inversion_bow", bow_scores, "client_updates",
                      {**details, "attack": "bag of words"}, {})
    if dager_scores:
        separable = sum(t < signals.width for t in tokens)
        rows += _rows(ctx.key, "inversion_dager", dager_scores, "client_updates",
                      {**details, "separable_clients": separable, "scored_on": SCORED_ON},
                      {"examples": examples})
    return rows


def _visible(seqs: list[list[int]]) -> list[list[int]]:
    """What DAGER can see of each sequence (SCORED_ON)."""
    return [s[1:-1] for s in seqs]


def _local_steps(ctx: LMContext, n: int) -> int:
    """Local steps of a client with n examples: ceil(n / B) per epoch, or DP-SGD's steps."""
    train = ctx.cell.spec.train
    if ctx.trained.claim.unit == "example" and ctx.trained.claim.noise_multiplier > 0:
        from privbench.trainers.privacy_plan import example_sampling

        return example_sampling(train, float(np.mean([len(s.indices) for s in ctx.shards])))[1]
    return math.ceil(n / train.batch_size) * train.local_epochs


def _aggregate_rows(ctx: LMContext, signals: UpdateSignals,
                    sums: dict[int, tuple[Params, list[int]]], common: dict[str, Any]
                    ) -> list[MetricRow]:
    """Both attacks on each round's sum, scored per token (bag of words: recall over the
    cohort's distinct tokens, precision over the recovered ones) and per sequence (DAGER)."""
    attacker = _Attacker(ctx, signals, 0x1A9)
    hits = found = distinct = 0
    per_seq: list[dict[str, float]] = []
    for r, (total, clients) in sums.items():
        idx = np.concatenate([ctx.shards[c].indices for c in clients])
        seqs = client_sequences(ctx.train, idx)
        grads = attacker.view(total, copies=len(clients))
        bow, rec = attacker.attack(r, grads, ctx.cell.spec.lm.max_length, len(clients))
        true_tokens = {t for s in seqs for t in s[1:]} - attacker.special
        if bow is not None:
            hits, found, distinct = (hits + len(bow & true_tokens), found + len(bow),
                                     distinct + len(true_tokens))
        if rec is not None:
            per_seq += per_sequence_scores([s[1:] for s in rec], _visible(seqs))
    details = {**common, "n_rounds": len(sums), "unit": "token or sequence of the cohort",
               "source": "the sum of the recorded client updates" if
               ctx.trained.observations.client_updates else
               "the secure-aggregation sum the server decoded"}
    rows = []
    if signals.bow_reason is None:
        r_lo, r_hi = clopper_pearson(hits, max(distinct, 1))
        p_lo, p_hi = clopper_pearson(hits, max(found, 1))
        rows += [MetricRow(ctx.key, "inversion_bow_aggregate", "token_recall",
                           hits / max(distinct, 1), r_lo, r_hi, surface="aggregates",
                           details={**details, "n": distinct}),
                 MetricRow(ctx.key, "inversion_bow_aggregate", "token_precision",
                           hits / max(found, 1), p_lo, p_hi, surface="aggregates",
                           details={"n": found})]
    if per_seq:
        rows += _rows(ctx.key, "inversion_dager_aggregate", per_seq, "aggregates",
                      {**details, "n": len(per_seq), "scored_on": SCORED_ON}, {})
    return rows


def _rows(key: str, scorer: str, scores: list[dict[str, float]], surface: str,
          details: dict[str, Any], first_extra: dict[str, Any]) -> list[MetricRow]:
    return [MetricRow(key, scorer, metric, m, lo, hi, surface=surface,
                      details={**details, **(first_extra if i == 0 else {})})
            for i, (metric, (m, lo, hi)) in enumerate(summarise(scores).items())]
