"""Scorers of the canaries planted in a fine-tuned language model: exposure of planted secrets
(ranked over every secret of the space, with the unplanted ones as the reference) and the black-box
one-run audit on secret canaries (privbench/audit/lm_canaries.py), surface final_model."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from privbench.attacks.exposure_lm import exposure, secret_log_likelihoods
from privbench.attacks.language_scorers import LMContext
from privbench.audit.designed_secrets import secret_token_scores
from privbench.audit.lm_canaries import secret_audit_rows, secret_scores
from privbench.run.results import MetricRow
from privbench.stats import clopper_pearson


def canary_exposure_scorer(ctx: LMContext) -> list[MetricRow]:
    """Exposure of every planted canary, ranked over all 10^digits secrets; canaries that were
    not planted give the reference (about 1/ln 2 = 1.44 bits on average for a model that never
    saw them)."""
    spec = ctx.cell.spec
    if ctx.task != "causal_lm" or not spec.attacks.canary_exposure.enabled or not ctx.data.canaries:
        return []
    digits = spec.lm.canaries.digits
    cache: dict[str, torch.Tensor] = {}
    per = []
    for can in ctx.data.canaries:
        if can.prefix not in cache:
            cache[can.prefix] = secret_log_likelihoods(ctx.trained.model, ctx.tokenizer,
                                                       can.prefix, digits)
        exp, rank = exposure(cache[can.prefix], can.secret)
        per.append({"id": can.id, "repetitions": can.repetitions, "included": can.included,
                    "exposure": exp, "rank": rank})
    planted = [p for p in per if p["included"]]
    held = [p for p in per if not p["included"]]
    by_rep = {str(r): float(np.mean([p["exposure"] for p in planted if p["repetitions"] == r]))
              for r in sorted({p["repetitions"] for p in planted})}
    details = {"space": 10 ** digits, "max_possible": digits * math.log2(10),
               "n_planted": len(planted), "n_not_planted": len(held),
               "by_repetitions": by_rep, "canaries": per}
    rows = []
    if planted:
        values = np.array([p["exposure"] for p in planted])
        lo, hi = mean_interval(values)
        extracted = sum(p["rank"] == 1 for p in planted)
        e_lo, e_hi = clopper_pearson(extracted, len(planted))
        rows += [
            MetricRow(ctx.key, "canary_exposure", "mean_exposure", float(values.mean()), lo, hi,
                      "final_model", details),
            MetricRow(ctx.key, "canary_exposure", "max_exposure", float(values.max()), None, None,
                      "final_model", {"space": 10 ** digits}),
            MetricRow(ctx.key, "canary_exposure", "extracted", extracted / len(planted), e_lo,
                      e_hi, "final_model",
                      {"n_planted": len(planted), "rule": "rank 1 among all secrets"}),
        ]
    if held:
        values = np.array([p["exposure"] for p in held])
        lo, hi = mean_interval(values)
        rows.append(MetricRow(ctx.key, "canary_exposure", "reference_exposure",
                              float(values.mean()), lo, hi, "final_model",
                              {"n_not_planted": len(held),
                               "expected_if_unseen": 1 / math.log(2)}))
    return rows


def lm_audit_scorer(ctx: LMContext) -> list[MetricRow]:
    """eps_lb and eps_ceiling rows with the verdict, from the secret canaries' log-likelihoods
    under the released model (surface final_model)."""
    if ctx.audit is None or not ctx.trained.observations.exposes("final_model"):
        return []
    if ctx.audit.design == "rare-tokens":  # designed canaries: their tokens only
        scores = secret_token_scores(ctx.trained.model, ctx.tokenizer, ctx.audit.template,
                                     ctx.audit.tokens)
    else:
        digits = len(ctx.audit.secrets[0])
        lls = secret_log_likelihoods(ctx.trained.model, ctx.tokenizer, ctx.audit.template,
                                     digits)
        scores = secret_scores(lls.numpy(), ctx.audit)
    claim = ctx.trained.claim
    return secret_audit_rows(ctx.key, ctx.cell.spec, scores, ctx.audit, claim.epsilon,
                             claim.delta)


def mean_interval(values: np.ndarray) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    return (float(lo), float(hi)) if math.isfinite(lo) else (float(values.mean()),) * 2
