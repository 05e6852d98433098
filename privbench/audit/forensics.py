"""Noise forensics on white-box surfaces: is the noise that the claim needs really there?

A white-box observer knows the claimed noise scale, and adding signal only adds variance. Each
test has a stated false-alarm rate `alpha` (family-wise over everything it checks, Bonferroni):
- noise scale, client-level central DP (`iterates`): round t's step of parameter tensor b is
  server_lr * (sum of clipped updates + N(0, (z C)^2 I)) / expected cohort, and the signal is
  computed before the round's noise is drawn, so ||step_bt||^2 / sigma^2 is stochastically at
  least chi-square(d_b). A lower-tail p-value below alpha / (tensors x rounds) is a FAIL naming
  the tensor and the round;
- noise scale, fresh and Gaussian, Dirac canaries (`iterates`): an excluded canary's coordinate
  moves by the noise alone, N(0, v_t) in each round, independently. Its normalised movements must
  not be too small (chi-square lower tail), not correlated between consecutive rounds (Fisher z
  of the lag-1 correlation; noise reused across rounds makes it ~1) and Gaussian (Kolmogorov-
  Smirnov against N(0, 1)); alpha / 3 each;
- participation: the realised cohort sizes the run recorded against Binomial(clients, q) each
  round, the total (two-sided exact binomial test) at alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from privbench.audit.canaries import audited_cohort
from privbench.audit.whitebox import canary_segments, snapshots
from privbench.results import MetricRow
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
    spec, claim = ctx.cell.spec, ctx.trained.claim
    if spec.privacy.unit != "client" or spec.privacy.setting != "central" \
            or spec.audit.surface != "iterates" or spec.secagg.enabled:
        return None
    rolled = {h["round"] for h in ctx.trained.history if "rollback" in h}
    snaps = snapshots(ctx)
    cohort = spec.train.cohort if ctx.canaries is None else min(
        audited_cohort(spec.train.cohort, len(ctx.shards), ctx.canaries.m),
        float(len(ctx.shards) + int(ctx.canaries.bits.sum())))
    base = spec.train.server_lr * claim.noise_multiplier * spec.privacy.clip / cohort
    factors = round_factors(spec.privacy.noise_schedule, spec.train.rounds)
    worst, where, tests = 1.0, "", 0
    for t in range(1, len(snaps)):
        if t in rolled:
            continue
        for name, p in snaps[t].items():
            step = (p - snaps[t - 1][name]).double().numpy().ravel()
            sigma = base * factors[t - 1]
            pv = float(stats.chi2.cdf(float(step @ step) / sigma**2, step.size))
            tests += 1
            if pv < worst:
                worst, where = pv, f"tensor {name}, round {t}"
    if tests == 0:
        return None
    p_adj = min(1.0, worst * tests)
    return Finding("noise_scale", p_adj, alpha, where,
                   f"each tensor's step energy vs the claimed N(0, ({base:.3g})^2) per "
                   f"coordinate, lower tail, Bonferroni over {tests} tensor-rounds")


def dirac_noise_tests(ctx: CellContext, alpha: float) -> list[Finding]:
    """Scale, freshness and Gaussianity of the noise on excluded Dirac canaries' coordinates."""
    canaries = ctx.canaries
    if canaries is None or canaries.kind != "dirac" or ctx.cell.spec.audit.surface != "iterates":
        return []
    x, model = canary_segments(ctx)
    out = x[~canaries.bits] / np.sqrt(model.variances)  # N(0, 1) each if the noise is as claimed
    if out.shape[0] < 3 or out.shape[1] < 2:
        return []
    a = alpha / 3
    n = out.size
    p_scale = float(stats.chi2.cdf(float((out**2).sum()), n))
    per_round = [float(stats.chi2.cdf(float((out[:, t]**2).sum()), out.shape[0]))
                 for t in range(out.shape[1])]
    worst = int(np.argmin(per_round))
    p_scale = min(1.0, min(p_scale, per_round[worst]) * 2)
    a0, a1 = out[:, :-1].ravel(), out[:, 1:].ravel()
    r = float(np.clip(np.mean(a0 * a1) / np.sqrt(np.mean(a0**2) * np.mean(a1**2)), -0.999999,
                      0.999999))
    p_fresh = float(2 * stats.norm.sf(abs(np.arctanh(r)) * np.sqrt(len(a0))))
    p_gauss = float(stats.kstest(out.ravel(), "norm").pvalue)
    return [
        Finding("noise_scale", p_scale, a, f"round {worst + 1} (and all rounds)",
                f"excluded canaries' coordinates vs the claimed noise, lower tail, {n} values"),
        Finding("noise_fresh", p_fresh, a, f"lag-1 correlation {r:.3f} over rounds",
                "independent noise in every round (Fisher z of the lag-1 correlation)"),
        Finding("noise_gaussian", p_gauss, a, "all rounds",
                "Kolmogorov-Smirnov of the normalised noise against N(0, 1)"),
    ]


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


def forensic_rows(ctx: CellContext) -> list[MetricRow]:
    """One "audit_forensics" row per test: value = p-value, the verdict against its alpha."""
    if not ctx.trained.claim.is_private or ctx.cell.spec.audit.surface == "final_model":
        return []
    alpha = ctx.cell.spec.audit.forensics_alpha
    findings = [f for f in (tensor_noise_scale(ctx, alpha), participation(ctx, alpha))
                if f is not None] + dirac_noise_tests(ctx, alpha)
    rows = []
    for f in findings:
        rows.append(MetricRow(ctx.key, "audit_forensics", f.test, f.p_value, None, None,
                              ctx.cell.spec.audit.surface,
                              {"verdict": f.verdict, "false_alarm_rate": f.alpha,
                               "where": f.where, "note": f.note,
                               "claimed_epsilon": ctx.trained.claim.epsilon}))
    return rows
