"""Noise forensics on white-box surfaces: is the noise that the claim needs really there?

A "noise too small" or "noise reused" test runs only where the values it reads are the raw
mechanism output (privbench.audit.whitebox.mechanism_output; for Dirac canaries only the
coordinates no real record moves): training after the noise is drawn post-processes it and can
shrink it (a later step's real gradient pulls back along the noise the model took up), so a
lower-tail test there would raise false alarms on a correct trainer.

A white-box observer knows the claimed noise scale, and adding signal only adds variance. Each
test has a stated false-alarm rate `alpha` (family-wise over everything it checks, Bonferroni):
- noise scale, client-level central DP (`iterates`): round t's step of parameter tensor b is
  server_lr * (sum of clipped updates + N(0, (z C)^2 I)) / expected cohort, and the signal is
  computed before the round's noise is drawn, so ||step_bt||^2 / sigma^2 is stochastically at
  least chi-square(d_b). A lower-tail p-value below alpha / (tensors x rounds) is a FAIL naming
  the tensor and the round;
- noise scale and freshness, client level (`iterates`): along an orthonormal basis of the
  excluded canaries' random directions each round's step is signal + N(0, sigma^2 I) with fresh
  noise; energy and paired round differences against chi-square (client_noise_tests);
- noise scale, fresh and Gaussian, Dirac canaries (`iterates`): an excluded canary's coordinate
  moves by the noise (plus, off blank inputs, real gradients), N(0, v_t) in each round. Its
  normalised movements must not be too small (chi-square lower tail, every round and all),
  differences of paired rounds must keep the later round's fresh noise (lower tail; noise reused
  across rounds cancels there), and on coordinates fed by always-blank inputs the noise must be
  Gaussian (Kolmogorov-Smirnov against N(0, 1)); alpha / 3 each;
- composition: the claim must account at least the DP steps that the observed rounds show;
- participation: the realised cohort sizes the run recorded against Binomial(clients, q) each
  round, the total (two-sided exact binomial test) at alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from privbench.audit.canaries import audited_cohort, flatten_all
from privbench.audit.whitebox import (
    blank_coordinates,
    canary_segments,
    example_plan,
    mechanism_output,
    snapshots,
)
from privbench.run.results import MetricRow
from privbench.scoring import CellContext
from privbench.trainers.privacy_plan import round_factors


@dataclass(frozen=True)
class Finding:
    """One forensic test: its p-value against a stated false-alarm rate, and where it looked."""

    test: str
    p_value: float
    alpha: float
    where: str
    note: str

    @property
    def verdict(self) -> str:
        return "FAIL" if self.p_value < self.alpha else "PASS"


def tensor_noise_scale(ctx: CellContext, alpha: float) -> Finding | None:
    """Client-level central DP on iterates: the smallest per-(tensor, round) lower-tail p-value
    of the step's energy against the claimed noise, Bonferroni over tensors and rounds."""
    spec = ctx.cell.spec
    if spec.privacy.unit != "client" or spec.privacy.setting != "central" \
            or spec.audit.surface != "iterates" or spec.secagg.enabled \
            or mechanism_output(ctx) is not None:
        return None
    rolled = {h["round"] for h in ctx.trained.history if "rollback" in h}
    snaps = snapshots(ctx)
    sigmas = _round_sigmas(ctx, ctx.canaries) if ctx.canaries is not None else None
    if sigmas is None:
        return None
    base = float(sigmas[0])
    kept = [t for t in range(1, len(snaps)) if t not in rolled]
    if not kept:
        return None
    names = list(snaps[0])
    # p-values (kept rounds, tensors): every round's step of a tensor at once, one chi2 call each
    pvs = np.empty((len(kept), len(names)))
    sig2 = np.asarray(sigmas, np.float64)[np.array(kept) - 1] ** 2
    for b, name in enumerate(names):
        stacked = torch.stack([s[name].detach() for s in snaps])  # the trainer's dtype
        steps = (stacked[1:] - stacked[:-1]).double().numpy().reshape(len(snaps) - 1, -1)
        energy = np.array([float(steps[t - 1] @ steps[t - 1]) for t in kept])
        pvs[:, b] = stats.chi2.cdf(energy / sig2, steps.shape[1])
    tests = pvs.size
    first = int(np.argmin(pvs))  # the first smallest, in (round, tensor) order
    worst = min(1.0, float(pvs.flat[first]))
    where = f"tensor {names[first % len(names)]}, round {kept[first // len(names)]}" \
        if worst < 1.0 else ""
    p_adj = min(1.0, worst * tests)
    return Finding("noise_scale", p_adj, alpha, where,
                   f"each tensor's step energy vs the claimed N(0, ({base:.3g})^2) per "
                   f"coordinate, lower tail, Bonferroni over {tests} tensor-rounds")


def paired_differences(y: np.ndarray) -> np.ndarray:
    """y[..., 2k+1] - y[..., 2k] over non-overlapping pairs of consecutive rounds (last axis)."""
    pairs = y.shape[-1] // 2
    return y[..., 1:2 * pairs:2] - y[..., 0:2 * pairs:2]


def lower_tail(energy: float, dof: int) -> float:
    """P[chi-square(dof) <= energy]: small when there is less noise than claimed."""
    return float(stats.chi2.cdf(energy, dof)) if dof > 0 else 1.0


def client_noise_tests(ctx: CellContext, alpha: float) -> list[Finding]:
    """Client-level central DP: noise scale and freshness along the excluded canaries' directions.

    Q, an orthonormal basis of the excluded canaries' random directions (drawn independently of
    everything the run computes), gives y_t = Q^T step_t = Q^T signal_t + N(0, sigma^2 I), the
    noise independent of the signal it is added to. Hence sum_t ||y_t||^2 / sigma^2 and, over
    pairs of rounds, sum ||y_2k+1 - y_2k||^2 / sigma^2 (the later round's noise is fresh) are
    stochastically at least chi-square: lower tails at alpha / 2 each. Noise reused across rounds
    cancels in the differences and leaves them far too small.
    """
    spec, canaries, claim = ctx.cell.spec, ctx.canaries, ctx.trained.claim
    if canaries is None or canaries.kind != "random-unit" or spec.audit.surface != "iterates" \
            or spec.privacy.setting != "central" or spec.secagg.enabled \
            or mechanism_output(ctx) is not None:
        return []
    out = canaries.vectors[~canaries.bits]
    if len(out) < 2:
        return []
    # (d, m_out) orthonormal columns: the canaries' own directions when they are orthonormal
    # (orthonormal_directions, m <= d; the statistics are sums of squares, the same in any
    # orthonormal basis of their span), else a QR of them
    q = out.T if canaries.m <= out.shape[1] else np.linalg.qr(out.T)[0]
    snaps = snapshots(ctx)
    thetas = flatten_all(snaps)
    y = q.T @ np.diff(thetas, axis=0).T  # (m_out, rounds)
    sigma = _round_sigmas(ctx, canaries)[: y.shape[1]]
    y = y / sigma
    p_scale = lower_tail(float((y**2).sum()), y.size)
    d = paired_differences(y * sigma) / sigma[1:2 * (y.shape[1] // 2):2]
    p_fresh = lower_tail(float((d**2).sum()), d.size)
    where = f"{y.shape[0]} excluded canary directions x {y.shape[1]} rounds"
    return [
        Finding("noise_scale_canaries", min(1.0, 2 * p_scale), alpha, where,
                f"projected steps vs the claimed noise (z = {claim.noise_multiplier:.3g}), "
                "lower tail"),
        Finding("noise_fresh", min(1.0, 2 * p_fresh), alpha, f"{d.shape[1]} pairs of rounds",
                "differences of consecutive rounds keep the later round's fresh noise, lower tail"),
    ]


def _round_sigmas(ctx: CellContext, canaries) -> np.ndarray:
    """Each round's claimed noise std per coordinate of the model step (client-level central)."""
    spec, claim = ctx.cell.spec, ctx.trained.claim
    cohort = min(audited_cohort(spec.train.cohort, len(ctx.shards), canaries.m),
                 float(len(ctx.shards) + int(canaries.bits.sum())))
    base = spec.train.server_lr * claim.noise_multiplier * spec.privacy.clip / cohort
    return base * np.asarray(round_factors(spec.privacy.noise_schedule, spec.train.rounds))


def dirac_noise_tests(ctx: CellContext, alpha: float) -> list[Finding]:
    """Scale, freshness and Gaussianity of the noise on excluded Dirac canaries' coordinates."""
    canaries = ctx.canaries
    if canaries is None or canaries.kind != "dirac" or ctx.cell.spec.audit.surface != "iterates":
        return []
    x, model = canary_segments(ctx)
    # Values that are the raw mechanism output: every excluded canary's where each round is one
    # DP step, else only coordinates no real record moves (N(0, 1) each there if the noise is as
    # claimed; Gaussianity is tested on those alone).
    blank = blank_coordinates(ctx, canaries.coords)
    raw = ~canaries.bits & (blank | (mechanism_output(ctx) is None))
    out = x[raw] / np.sqrt(model.variances)
    noise = x[~canaries.bits & blank] / np.sqrt(model.variances)
    if out.shape[0] < 3 or out.shape[1] < 2:
        return []
    a = alpha / 3
    per_round = [lower_tail(float((out[:, t]**2).sum()), out.shape[0])
                 for t in range(out.shape[1])]
    worst = int(np.argmin(per_round))
    tests = [lower_tail(float((out**2).sum()), out.size), *per_round]
    p_scale = min(1.0, min(tests) * len(tests))
    d = paired_differences(out)  # the later round's noise is fresh: at least N(0, 1)
    p_fresh = lower_tail(float((d**2).sum()), d.size)
    findings = [
        Finding("noise_scale", p_scale, a, f"round {worst + 1} (of {out.shape[1]}, and all)",
                f"excluded canaries' coordinates vs the claimed noise, lower tail, {out.size} "
                f"values, Bonferroni over {len(tests)}"),
        Finding("noise_fresh", p_fresh, a, f"{d.shape[1]} pairs of rounds",
                "differences of consecutive rounds keep the later round's fresh noise, lower "
                "tail"),
    ]
    if noise.shape[0] >= 3:
        findings.append(Finding(
            "noise_gaussian", float(stats.kstest(noise.ravel(), "norm").pvalue), a,
            f"{noise.shape[0]} coordinates fed by always-blank inputs",
            "Kolmogorov-Smirnov of the normalised noise against N(0, 1)"))
    return findings


def participation(ctx: CellContext, alpha: float) -> Finding | None:
    """Realised cohort sizes (recorded per round) against Binomial(clients, claimed rate)."""
    claim, history = ctx.trained.claim, ctx.trained.history
    sizes = [h["cohort"] for h in history if "cohort" in h]
    if ctx.cell.spec.privacy.unit != "client" or claim.sampling != "poisson" or not sizes:
        return None
    n_clients = len(ctx.shards) + (0 if ctx.canaries is None or ctx.canaries.kind == "dirac"
                                   else int(ctx.canaries.bits.sum()))
    total = int(sum(sizes))
    trials = n_clients * len(sizes)
    p = float(stats.binomtest(total, trials, min(claim.sampling_rate, 1.0)).pvalue)
    return Finding("participation", p, alpha, f"{len(sizes)} rounds, {total} participations",
                   f"realised cohorts vs Binomial({n_clients}, {claim.sampling_rate:.3g}) per "
                   "round, two-sided exact test")


def composition(ctx: CellContext) -> Finding | None:
    """The claim must compose at least the DP steps the observed rounds show: rounds seen on
    the surface times DP steps per round (local DP-SGD steps, or one release per round). At
    example level in a federation a record's steps are its client's participations times the
    local steps; the iterates do not show who joined, so the check takes the clients' mean
    participations from the recorded cohorts (the busiest client joined at least that often).
    An exact check: p-value 0 when the claim accounts fewer steps, 1 otherwise."""
    spec, claim = ctx.cell.spec, ctx.trained.claim
    if spec.privacy.setting != "central" and spec.privacy.unit == "client":
        return None
    rounds = len(ctx.trained.observations.iterates)
    per_round, shows = 1, "the rounds observed"
    if spec.privacy.unit == "example":
        per_round = example_plan(ctx).local_steps
        if len(ctx.shards) > 1:
            joined = sum(_joined(h) for h in ctx.trained.history if "cohort" in h)
            rounds = math.ceil(joined / len(ctx.shards))
            shows = "the clients' mean participations (recorded cohorts)"
    ran = rounds * per_round
    return Finding("composition", 0.0 if claim.steps < ran else 1.0, spec.audit.forensics_alpha,
                   f"claim composes {claim.steps} steps; the run shows {ran}",
                   f"the accounted number of DP steps against {shows}")


def _joined(record: dict) -> int:
    """The clients a round's record says trained: its sampled cohort less those that dropped
    out, sat out at the participation cap or were outside the population (fedavg's filters)."""
    return (record["cohort"] - record.get("dropped_out", 0)
            - len(record.get("sat_out_at_cap", ())) - record.get("outside_population", 0))


def forensic_rows(ctx: CellContext) -> list[MetricRow]:
    """One "audit_forensics" row per test: value = p-value, the verdict against its alpha."""
    if not ctx.trained.claim.is_private or ctx.cell.spec.audit.surface == "final_model":
        return []
    alpha = ctx.cell.spec.audit.forensics_alpha
    findings = [f for f in (tensor_noise_scale(ctx, alpha), participation(ctx, alpha),
                            composition(ctx))
                if f is not None] + client_noise_tests(ctx, alpha) + dirac_noise_tests(ctx, alpha)
    rows = []
    for f in findings:
        rows.append(MetricRow(ctx.key, "audit_forensics", f.test, f.p_value, None, None,
                              ctx.cell.spec.audit.surface,
                              {"verdict": f.verdict, "false_alarm_rate": f.alpha,
                               "where": f.where, "note": f.note,
                               "claimed_epsilon": ctx.trained.claim.epsilon}))
    return rows
