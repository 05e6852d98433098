"""Canary-aligned signals of a white-box audit, and the claim's model of them.

For each canary j and observed segment t (a round on `iterates`, the whole run on
`final_weights`) the auditor reads how far the model moved along the canary:
- Dirac gradient canaries (example-level DP-SGD): the descent along the canary's coordinate,
  -(theta_t - theta_{t-1})[coord_j] / (lr * server_lr / batch): clipped gradients plus noise;
- random-unit canary clients (client-level DP-FedAvg): <c_j, theta_t - theta_{t-1}>.
The claim's model of the same quantities (privbench.audit.gauss_sum.WhiteBoxModel) takes the
sampling rate from the Claim (what is claimed, so an under-reported rate is tested) and each
segment's steps and noise from the cell's privacy plan, in units of one clipped canary step.
"""

from __future__ import annotations

import itertools

import numpy as np

from privbench.audit.canaries import flatten
from privbench.audit.gauss_sum import WhiteBoxModel
from privbench.audit.gradient_canaries import claimed_mechanism, coordinate_values
from privbench.models import build_model
from privbench.scoring import CellContext
from privbench.trainers.privacy_plan import make_plan, round_factors

WHITE_BOX = ("final_weights", "iterates")


def is_white_box(ctx: CellContext) -> bool:
    """A one-run audit whose canaries the auditor can read on the weights."""
    a = ctx.cell.spec.audit
    return a.surface in WHITE_BOX and a.canary in ("dirac", "random-unit")


def initial_params(ctx: CellContext) -> dict:
    spec = ctx.cell.spec
    model = build_model(spec.model, ctx.data.n_features, ctx.data.n_classes, spec.seed)
    return {name: p.detach() for name, p in model.named_parameters()}


def snapshots(ctx: CellContext) -> list[dict]:
    """The observed models: the initial one, then every round's (iterates) or the last."""
    observed = ctx.trained.observations
    later = observed.iterates if ctx.cell.spec.audit.surface == "iterates" \
        else [observed.final_params]
    return [initial_params(ctx), *later]


def canary_segments(ctx: CellContext) -> tuple[np.ndarray, WhiteBoxModel]:
    """(x, model): x (m, S) each canary's signal per observed segment; the claim's model."""
    spec, canaries, claim = ctx.cell.spec, ctx.canaries, ctx.trained.claim
    assert canaries is not None
    rounds = len(ctx.trained.observations.iterates)
    per_round = spec.audit.surface == "iterates"
    snaps = snapshots(ctx)
    if canaries.kind == "dirac":
        plan = make_plan(spec.train, spec.privacy, 1, mean_shard=float(len(ctx.data.y_train)))
        mech = claimed_mechanism(spec, plan)
        values = coordinate_values(snaps, canaries.coords)
        signal = min(canaries.norm, spec.privacy.clip)  # the planted canary, clipped
        x = -np.diff(values, axis=-1) / mech.step_scale / signal
        steps, var = mech.segments(rounds, per_round)
        return x, WhiteBoxModel(steps.astype(np.float64), var / signal**2, claim.sampling_rate)
    clip = spec.privacy.clip
    z = claim.noise_multiplier * np.asarray(round_factors(spec.privacy.noise_schedule,
                                                          spec.train.rounds)[:rounds])
    var = (z * clip / min(canaries.norm, clip)) ** 2  # one round's noise, in canary steps
    x = whitened_projections(canaries.vectors, snaps)
    if per_round:
        return x, WhiteBoxModel(np.ones(rounds), var, claim.sampling_rate)
    return x, WhiteBoxModel(np.array([float(rounds)]), np.array([var.sum()]),
                            claim.sampling_rate)


def whitened_projections(vectors: np.ndarray, snaps: list[dict]) -> np.ndarray:
    """sum_b w_bt <c_jb, step_bt> for each canary j and segment t, over parameter tensors b.

    w_bt = v_t / v_bt: the segment's mean per-coordinate step energy over that of tensor b, so a
    tensor whose real updates dwarf the noise (a bias every client moves alike) counts less, and
    one with less noise than the rest counts more. The weights read the steps, never the bits;
    for the claim's model any weights give at most the plain projection's mean shift over spread
    (Cauchy-Schwarz), so the bound stays conservative.
    """
    thetas = np.stack([flatten(p) for p in snaps])
    steps = np.diff(thetas, axis=0)  # (S, d)
    sizes = [p.numel() for p in snaps[0].values()]
    bounds = np.cumsum([0, *sizes])
    energy = np.stack([(steps[:, a:b] ** 2).mean(axis=1) for a, b in itertools.pairwise(bounds)],
                      axis=1)  # (S, blocks)
    overall = (steps**2).mean(axis=1, keepdims=True)
    weights = overall / np.maximum(energy, 1e-300)
    x = np.zeros((len(vectors), len(steps)))
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        x += (vectors[:, a:b] @ steps[:, a:b].T) * weights[:, k]
    return x
