"""Shadow-model membership attacks on a trained cell: LiRA (online, offline) and RMIA.

The whole audit pool is attacked (train members against test + population non-members). Shadow
models mirror the target's executed configuration and are trained once, batched, per cell (and
cached by content hash in the run folder). Every attack reads only per-example signals; the
target's membership bits serve to evaluate, and decision thresholds are fixed on shadow 0 used as
a pseudo-target (attacked with the other shadows), never on the target's labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from privbench.attacks.membership import (
    lira_offline,
    lira_online,
    logit_confidence,
    rmia,
    true_class_probability,
)
from privbench.attacks.membership.metrics import (
    MAX_CLIENT_SLICES,
    calibrated_rows,
    membership_rows,
    slice_rows,
    vulnerable_records_row,
)
from privbench.attacks.membership.population import AuditPool, audit_pool, balanced_inclusion
from privbench.attacks.membership.rmia import marginal_probability
from privbench.attacks.membership.shadows import ShadowPlan, batched_logits, cached_shadows
from privbench.models import build_model
from privbench.query.classifier import logits as model_logits
from privbench.run.results import MetricRow
from privbench.scoring import CellContext
from privbench.spec.attack_schema import AttacksSpec
from privbench.spec.shadow_cells import trains_shadows

SURFACE = "final_model"
# attack(logits of the attacked model (N, C), shadow logits (K, N, C), inclusion (K, N)) -> scores
Attack = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def shadow_attacks(attacks: AttacksSpec, pool: AuditPool) -> dict[str, Attack]:
    """The enabled shadow-based attacks, by the scorer name their rows carry."""
    y, z = pool.y, pool.population_index >= 0
    out: dict[str, Attack] = {}
    if attacks.lira.enabled:
        fixed = attacks.lira.variance == "fixed"

        def phi_args(t, s, inc):
            return logit_confidence(t, y), logit_confidence(s, y), inc

        out["lira_online"] = lambda t, s, inc: lira_online(*phi_args(t, s, inc),
                                                           fixed_variance=fixed)
        out["lira_offline"] = lambda t, s, inc: lira_offline(*phi_args(t, s, inc),
                                                             fixed_variance=fixed)
    if attacks.rmia.enabled:
        spec = attacks.rmia

        def rmia_scores(t, s, inc):
            refs = spec.references or len(s)
            p_t = true_class_probability(t, y)
            marg = marginal_probability(
                true_class_probability(s[:refs], y), inc[:refs],
                offline_a=spec.offline_a if spec.mode == "offline" else None)
            return rmia(p_t, marg, p_t[z], marg[z], gamma=spec.gamma)

        out["rmia"] = rmia_scores
    return out


def loss_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LOSS scores (minus cross-entropy) from logits, for target or shadow alike."""
    logp = torch.log_softmax(torch.from_numpy(logits), dim=-1).numpy()
    return np.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def attack_rows(key: str, scorer: str, scores: np.ndarray, pool: AuditPool,
                n_clients: int, extra: dict | None = None) -> list[MetricRow]:
    """Every membership metric of one attack on the audit pool."""
    m = pool.member
    rows = membership_rows(key, scorer, SURFACE, scores[m], scores[~m])
    if extra:
        rows[0].details.update(extra)
    slices = {"class": pool.y}
    if n_clients <= MAX_CLIENT_SLICES:
        slices["client"] = pool.client
    rows += slice_rows(key, scorer, SURFACE, scores, m, slices)
    ids = [pool.record_id(i) for i in range(len(pool))]
    rows.append(vulnerable_records_row(key, scorer, SURFACE, scores, m, ids, pool.y))
    return rows


def shadow_attack_scorer(ctx: CellContext) -> list[MetricRow]:
    """LiRA and RMIA (as enabled) on the cell's released model; [] when none is enabled."""
    spec = ctx.cell.spec
    attacks = spec.attacks
    if not (attacks.lira.enabled or attacks.rmia.enabled) or not trains_shadows(spec):
        return []  # attacks.shadows.cells: only the cells it names train shadows
    claim = ctx.trained.claim
    pool = audit_pool(ctx.data, ctx.shards)
    k = attacks.shadows.models
    inclusion = balanced_inclusion(len(pool), k, spec.seed)
    model = ctx.trained.model
    init_model = build_model(spec.model, ctx.data.n_features, ctx.data.n_classes, spec.seed)
    init = {n: p.detach().clone() for n, p in init_model.named_parameters()}
    plan = ShadowPlan(data=spec.data, train=spec.train, noise_multiplier=claim.noise_multiplier,
                      clip=claim.clip if claim.is_private else None, seed=spec.seed + 1,
                      example_level=claim.is_private and claim.unit == "example")
    # The shadow cache of an encrypted run is sealed with its key (trainers.shadow).
    cache = ctx.run_dir / "shadows" if ctx.run_dir is not None else None
    start = time.perf_counter()
    shadows = cached_shadows(cache, init_model, init, pool.x, pool.y, inclusion, plan)
    shadow_seconds = time.perf_counter() - start
    target = model_logits(model, pool.x).double().numpy()
    shadow = batched_logits(init_model, shadows, pool.x)

    design = {"shadow_models": k, "shadow_seconds": shadow_seconds,
              "design": "audit pool = train (members) + test + population (non-members); "
                        "each record IN half of the shadow models"}
    rows: list[MetricRow] = []
    calibrate = k >= 3
    rest = np.arange(1, k)
    for name, attack in shadow_attacks(attacks, pool).items():
        scores = attack(target, shadow, inclusion)
        rows += attack_rows(ctx.key, name, scores, pool, spec.data.clients, design)
        if calibrate:  # shadow 0 as a pseudo-target, attacked with the others
            pseudo = attack(shadow[0], shadow[rest], inclusion[rest])
            rows += calibrated_rows(ctx.key, name, SURFACE, scores[pool.member],
                                    scores[~pool.member], pseudo[~inclusion[0]],
                                    "shadow model 0 as pseudo-target")
    if calibrate and attacks.loss.enabled:
        own = loss_scores(target, pool.y)
        pseudo = loss_scores(shadow[0], pool.y)
        rows += calibrated_rows(ctx.key, "loss", SURFACE, own[pool.member], own[~pool.member],
                                pseudo[~inclusion[0]], "shadow model 0 as pseudo-target")
    return rows
