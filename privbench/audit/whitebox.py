"""Canary-aligned signals of a white-box audit, and the claim's model of them.

For each canary j and observed segment t (a round on `iterates`, the whole run on
`final_weights`) the auditor reads how far the model moved along the canary:
- Dirac gradient canaries (example-level DP-SGD): the descent along the canary's coordinate,
  -(theta_t - theta_{t-1})[coord_j] / (lr * server_lr / batch): clipped gradients plus noise;
- random-unit canary clients (client-level DP-FedAvg): <c_j, theta_t - theta_{t-1}>.
The claim's model of the same quantities (privbench.audit.gauss_sum.WhiteBoxModel) takes the
sampling rate from the Claim (what is claimed, so an under-reported rate is tested) and each
segment's steps and noise from the cell's privacy plan, in units of one clipped canary step.

Those models hold only where the observed statistic is exactly the mechanism's output
(`mechanism_output`): a canary's signal plus fresh noise, with nothing computed from earlier noise
added to it. Training after a canary is planted is post-processing that can rescale or shrink the
statistic (a later round's real gradients pull back along noise the model took up), so elsewhere
only bounds valid under any post-processing (guess counting, privbench.audit.fdp) may be used.
"""

from __future__ import annotations

import itertools

import numpy as np

from privbench.audit.canaries import flatten_all
from privbench.audit.gauss_sum import WhiteBoxModel
from privbench.audit.gradient_canaries import claimed_mechanism, coordinate_values
from privbench.models import build_model
from privbench.scoring import CellContext
from privbench.trainers.privacy_plan import PrivacyPlan, make_plan, round_factors

WHITE_BOX = ("final_weights", "iterates")


def is_white_box(ctx: CellContext) -> bool:
    """A one-run audit whose canaries the auditor can read on the weights."""
    a = ctx.cell.spec.audit
    return a.surface in WHITE_BOX and a.canary in ("dirac", "random-unit")


def mechanism_output(ctx: CellContext) -> str | None:
    """None when every observed canary signal is exactly the claimed mechanism's output (fresh
    noise plus the canary's clipped contribution plus real contributions that do not depend on
    earlier noise along the canary); else why not, in a few words.

    - random-unit canary clients (client-level central DP): each round's step on `iterates` is
      server_lr times the noisy mean, exactly, when the server steps by plain SGD; the real
      clients' updates depend on the previous iterate, but the round's noise is fresh and drawn
      after them. On `final_weights` that holds for one round only: later rounds' training
      post-processes the earlier noise.
    - Dirac gradient canaries (example-level DP-SGD of one client, plain SGD): on `iterates` with
      one DP step per round, each round's move is that step's noisy clipped sum (the real
      gradients are of the previous iterate, the noise fresh); on any surface when every canary
      coordinate is a first-layer weight of an input feature that is zero in every training
      record (no real record's gradient ever moves it, whatever the model state). Dirac records
      of several clients never are: a round averages the canary client's noisy step with the
      cohort's.
    """
    spec, canaries = ctx.cell.spec, ctx.canaries
    if canaries is None or spec.audit.surface not in WHITE_BOX:
        return "not a white-box surface"
    if spec.task != "tabular" and (spec.lm.optimizer != "sgd" or spec.lm.server_optimizer != "sgd"):
        return "an adaptive optimizer post-processes the noisy sums"
    if canaries.kind == "random-unit":
        if spec.privacy.unit != "client" or spec.privacy.setting != "central":
            return "random-unit canaries outside client-level central DP"
        if spec.audit.surface == "final_weights" and len(ctx.trained.observations.iterates) > 1:
            return "final_weights after several rounds: later training post-processes the noise"
        return None
    if canaries.kind == "dirac":
        if len(ctx.shards) > 1:
            return ("Dirac records of several clients: the cohort's sampling and mean mix each "
                    "canary's step with the other clients' noise")
        if blank_coordinates(ctx, canaries.coords).all():
            return None
        plan = example_plan(ctx)
        if spec.audit.surface == "iterates" and plan.local_steps == 1:
            return None  # each round is one DP step: its noise is drawn after its gradients
        return ("real records' gradients move the canary coordinates between the observed "
                "models (several DP steps per observed segment)")
    return "canaries without a white-box signal"


def example_plan(ctx: CellContext) -> PrivacyPlan:
    """The example-level privacy plan the trainer made for the cell: its real clients (one in
    centralised DP-SGD) and their mean shard, so the local DP steps, record rate and
    participation cap are the run's."""
    spec, n = ctx.cell.spec, max(1, len(ctx.shards))
    return make_plan(spec.train, spec.privacy, n, mean_shard=ctx.n_train_records / n)


def blank_coordinates(ctx: CellContext, coords: np.ndarray) -> np.ndarray:
    """True for flat coordinates of the first layer's weight whose input feature is zero in every
    training record: no real record moves them, so they carry the canary and the noise alone."""
    first = next(iter(initial_params(ctx).values()))
    if ctx.cell.spec.task != "tabular" or first.dim() != 2:  # text has no blank input feature
        return np.zeros(len(coords), bool)
    n_out, n_in = first.shape
    blank = np.all(ctx.data.x_train == 0, axis=0)
    inside = coords < n_out * n_in
    return inside & blank[np.where(inside, coords % n_in, 0)]


def initial_params(ctx: CellContext) -> dict:
    """The trainable parameters the run started from: as the trainer recorded them (any
    model), else rebuilt from the zoo's seeded model (observations read back without them)."""
    recorded = ctx.trained.observations.initial_params
    if recorded:
        return recorded
    spec = ctx.cell.spec
    model = build_model(spec.model, ctx.data.n_features, ctx.data.n_classes, spec.seed)
    return {name: p.detach() for name, p in model.named_parameters()}


def snapshots(ctx: CellContext) -> list[dict]:
    """The observed models: the initial one, then every round's (iterates) or the last."""
    observed = ctx.trained.observations
    later = observed.iterates if ctx.cell.spec.audit.surface == "iterates" \
        else [observed.final_params]
    return [initial_params(ctx), *later]


def canary_segments(ctx: CellContext, *, whiten: bool = True
                    ) -> tuple[np.ndarray, WhiteBoxModel]:
    """(x, model): x (m, S) each canary's signal per observed segment; the claim's model.

    Args:
        ctx: the cell's context (its canaries, claim and observed models).
        whiten: weight parameter tensors by their step energy (random-unit canaries; a score for
            guess counting). False gives the plain projection, a linear function of the
            mechanism's output, which a parametric bound needs.
    Returns:
        x, in units of one clipped canary step (Dirac) or of the projection (random-unit), and
        the claim's model of it.
    """
    spec, canaries, claim = ctx.cell.spec, ctx.canaries, ctx.trained.claim
    assert canaries is not None
    rounds = len(ctx.trained.observations.iterates)
    per_round = spec.audit.surface == "iterates"
    snaps = snapshots(ctx)
    if canaries.kind == "dirac":
        mech = claimed_mechanism(spec, example_plan(ctx))
        values = coordinate_values(snaps, canaries.coords)
        signal = min(canaries.norm, spec.privacy.clip)  # the planted canary, clipped
        x = -np.diff(values, axis=-1) / mech.step_scale / signal
        steps, var = mech.segments(rounds, per_round)
        return x, WhiteBoxModel(steps.astype(np.float64), var / signal**2, claim.sampling_rate)
    clip = spec.privacy.clip
    z = claim.noise_multiplier * np.asarray(round_factors(spec.privacy.noise_schedule,
                                                          spec.train.rounds)[:rounds])
    var = (z * clip / min(canaries.norm, clip)) ** 2  # one round's noise, in canary steps
    x = whitened_projections(canaries.vectors, snaps) if whiten \
        else plain_projections(canaries.vectors, snaps)
    if per_round:
        return x, WhiteBoxModel(np.ones(rounds), var, claim.sampling_rate)
    return x, WhiteBoxModel(np.array([float(rounds)]), np.array([var.sum()]),
                            claim.sampling_rate)


def plain_projections(vectors: np.ndarray, snaps: list[dict]) -> np.ndarray:
    """<c_j, step_t> for each canary j and observed segment t."""
    thetas = flatten_all(snaps)
    return vectors @ np.diff(thetas, axis=0).T


def whitened_projections(vectors: np.ndarray, snaps: list[dict]) -> np.ndarray:
    """sum_b w_bt <c_jb, step_bt> for each canary j and segment t, over parameter tensors b.

    w_bt = v_t / v_bt: the segment's mean per-coordinate step energy over that of tensor b, so a
    tensor whose real updates dwarf the noise (a bias every client moves alike) counts less, and
    one with less noise than the rest counts more. The weights read the steps, never the bits;
    for the claim's model any weights give at most the plain projection's mean shift over spread
    (Cauchy-Schwarz), so the bound stays conservative.
    """
    thetas = flatten_all(snaps)
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
