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

from privbench.attacks.inversion.lm_attacker import UpdateAttacker, noise_seen
from privbench.attacks.inversion.lm_signals import UpdateSignals, update_signals
from privbench.attacks.inversion.lm_text import (
    client_sequences,
    decoded_pairs,
    per_sequence_scores,
)
from privbench.attacks.inversion.metrics import summarise, text_scores, token_precision_recall
from privbench.attacks.language_scorers import LMContext
from privbench.models.adapter import Params
from privbench.run.results import MetricRow
from privbench.stats import clopper_pearson

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


def _common(ctx: LMContext, signals: UpdateSignals) -> dict[str, Any]:
    claim, train, lm = ctx.trained.claim, ctx.cell.spec.train, ctx.cell.spec.lm
    added, inside = noise_seen(ctx)
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


def _client_rows(ctx: LMContext, signals: UpdateSignals,
                 targets: list[tuple[int, int, Params]], common: dict[str, Any]
                 ) -> list[MetricRow]:
    attacker = UpdateAttacker(ctx, signals, 0x1A8)
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
    attacker = UpdateAttacker(ctx, signals, 0x1A9)
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
