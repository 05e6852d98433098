"""The "audit" scorer: canary scores on the audited surface -> epsilon lower bound -> verdict."""

from __future__ import annotations

import math

import numpy as np

from privbench.audit.canaries import (
    audited_cohort,
    final_delta_cosines,
    round_likelihood_scores,
)
from privbench.audit.design_memo import remembered_guesses, remembered_power
from privbench.audit.estimators import EpsilonBound
from privbench.audit.family import MechanismFamily
from privbench.audit.fdp import fdp_one_run_bound, fdp_rejects
from privbench.audit.forensics import forensic_rows
from privbench.audit.gauss_sum import WhiteBoxModel, gauss_sum_bound, mu_lower_bound
from privbench.audit.gradient_canaries import (
    claimed_mechanism,
    coordinate_values,
    dirac_log_likelihood_ratio,
)
from privbench.audit.multi_run import multi_run_bound
from privbench.audit.one_run_bound import correct_guesses, fl_one_shot_bound, one_run_bound
from privbench.audit.verdict import audit_rows
from privbench.audit.whitebox import (
    canary_segments,
    example_plan,
    initial_params,
    is_white_box,
    mechanism_output,
)
from privbench.privacy import accounting_cache
from privbench.query.classifier import per_example_losses
from privbench.run.results import MetricRow
from privbench.scoring import CellContext

# A surface the audit reads, and the exposed surfaces that reveal it (iterates end in the final
# weights).
REVEALED_BY = {
    "final_model": ("final_model", "final_weights", "iterates"),
    "final_weights": ("final_weights", "iterates"),
    "iterates": ("iterates",),
}


def canary_scores(ctx: CellContext) -> np.ndarray:
    """Membership scores of every canary (higher = 'in') on the spec's audit surface."""
    spec, canaries, trained = ctx.cell.spec, ctx.canaries, ctx.trained
    assert canaries is not None
    if spec.audit.surface == "final_model":
        return -per_example_losses(trained.model, canaries.x, canaries.y)
    initial = initial_params(ctx)
    if canaries.kind == "dirac":  # the claimed DP-SGD mechanism's likelihood ratio
        observed = trained.observations
        snapshots = [initial, *(observed.iterates if spec.audit.surface == "iterates"
                                else [observed.final_params])]
        values = coordinate_values(snapshots, canaries.coords)
        if not trained.claim.is_private:  # no mechanism to model: the descent along the canary
            return values[:, 0] - values[:, -1]
        return claimed_mechanism(spec, example_plan(ctx)).scores(values, len(observed.iterates))
    if spec.audit.surface == "final_weights":
        return final_delta_cosines(canaries.vectors, initial, trained.observations.final_params)
    # The sampling rate expected before the bits are drawn (the score must not read the bits),
    # and a clipped canary's shift of the averaged update.
    cohort = audited_cohort(spec.train.cohort, len(ctx.shards), canaries.m)
    q = min(cohort / (len(ctx.shards) + canaries.m / 2), 1.0)
    clip = spec.privacy.clip if trained.claim.is_private else canaries.norm
    signal = spec.train.server_lr * min(canaries.norm, clip) / cohort
    return round_likelihood_scores(canaries.vectors, initial, trained.observations.iterates,
                                   signal, q)


def audit_bound(ctx: CellContext, scores: np.ndarray | None = None
                ) -> tuple[EpsilonBound, dict]:
    """The spec's estimator on the canaries, plus what else a reader should see.

    Args:
        ctx: the trained cell with its canaries.
        scores: the canaries' membership scores (`canary_scores`), computed here where the
            estimator reads them (the Steinke and FL one-shot bounds; the white-box bounds read
            the canary segments of the claimed mechanism instead) when not given.
    Returns:
        The bound and the extra details of its rows.
    """
    a, canaries, claim = ctx.cell.spec.audit, ctx.canaries, ctx.trained.claim
    assert canaries is not None
    extra = {"canary": a.canary, "n_canaries": canaries.m, "included": int(canaries.bits.sum()),
             "design": a.design, "canary_norm": canaries.norm}
    if a.mode == "fl-one-shot":
        scores = canary_scores(ctx) if scores is None else scores
        dim = canaries.vectors.shape[1]
        unseen = scores[~canaries.bits]
        # Unseen canaries' cosines should look N(0, 1/d): their spread, in units of 1/sqrt(d).
        extra["unseen_std_over_null"] = float(unseen.std(ddof=1) * math.sqrt(dim))
        return fl_one_shot_bound(scores[canaries.bits], dim, delta=claim.delta,
                                 alpha=a.alpha), extra
    rng = np.random.default_rng([ctx.cell.spec.seed, 0xA0D1])
    estimator = resolved_estimator(ctx)
    if estimator != "steinke" and claim.is_private:
        why_not = mechanism_output(ctx)
        if estimator == "gauss-sum" and why_not is not None:
            extra["estimator_note"] = (f"gauss-sum needs the mechanism's raw output ({why_not}); "
                                       "used the f-DP guess-counting bound instead")
            estimator = "fdp"
        extra["estimator"] = estimator
        extra["statistic"] = "the mechanism's output" if why_not is None else \
            f"post-processed ({why_not}): a non-parametric bound; power simulated on the claim"
        x, model = canary_segments(ctx, whiten=estimator != "gauss-sum")
        family = MechanismFamily.of(claim.event(), claim.delta, claim.neighbouring)
        if estimator == "gauss-sum":
            bound = gauss_sum_bound(x, canaries.bits, model, family, alpha=a.alpha,
                                    claimed=claim.epsilon)
            refutes = gauss_sum_refutes(model, a.alpha)
            verdict = ["gauss-sum", a.alpha]
        else:
            def simulate(bits, rng):
                return model_scores(model, model.simulate(bits, 1.0, rng))

            k_plus, k_minus = remembered_guesses(canaries.m, model, simulate, family, a.alpha,
                                                 rng)
            bound = fdp_one_run_bound(model_scores(model, x), canaries.bits, family, k_plus=k_plus,
                                      k_minus=k_minus, alpha=a.alpha, claimed=claim.epsilon,
                                      rng=rng)
            refutes = fdp_refutes(model, family, k_plus, k_minus, a.alpha)
            verdict = ["fdp", a.alpha, k_plus, k_minus]
        extra.update(remembered_power(model, family, canaries.m, refutes, verdict,
                                      seed=ctx.cell.spec.seed))
        return bound, extra
    scores = canary_scores(ctx) if scores is None else scores
    return one_run_bound(scores, canaries.bits, delta=claim.delta, alpha=a.alpha,
                         selection=a.selection, rng=rng), extra


def resolved_estimator(ctx: CellContext) -> str:
    """audit.estimator with "auto" resolved: on white-box canaries gauss-sum where the observed
    statistic is exactly the mechanism's output (privbench.audit.whitebox.mechanism_output), the
    f-DP guess-counting bound where training post-processes it (valid under any
    post-processing); steinke elsewhere."""
    a = ctx.cell.spec.audit
    if a.estimator != "auto":
        return a.estimator
    if not is_white_box(ctx):
        return "steinke"
    return "gauss-sum" if mechanism_output(ctx) is None else "fdp"


def model_scores(model: WhiteBoxModel, x: np.ndarray) -> np.ndarray:
    """The claimed mechanism's log-likelihood ratio of canary segments x (canary-step units)."""
    return dirac_log_likelihood_ratio(x, model.steps, model.variances, model.sampling_rate, 1.0)


def gauss_sum_refutes(model: WhiteBoxModel, alpha: float):
    """Verdict FAIL of the Gaussian-sum bound: mu_LB above the claimed mu (s_UB < 1)."""
    mu_claim = model.mu(1.0)

    def refutes(x: np.ndarray, bits: np.ndarray) -> np.ndarray:
        return mu_lower_bound(model.statistic(x), bits, alpha) > mu_claim

    return refutes


def fdp_refutes(model: WhiteBoxModel, family: MechanismFamily, k_plus: int, k_minus: int,
                alpha: float):
    """Verdict FAIL of the f-DP bound: the claimed member (s = 1) ruled out, that is at least
    c* of the k+ + k- guesses correct (rejection is monotone in the count; c* is found once by
    bisection over the counts, then each simulated audit is one comparison)."""
    guesses = k_plus + k_minus
    pairs = np.array([[k_plus, k_minus]])
    threshold: dict[int, int] = {}

    def search(m: int) -> int:
        def rejects(c: int) -> bool:
            return fdp_rejects(m, guesses, c, alpha, family.curve(1.0))

        lo, hi = 0, guesses + 1  # not rejected at lo (0 correct), rejected at hi
        if rejects(guesses):
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if mid <= guesses and rejects(mid):
                    hi = mid
                else:
                    lo = mid
        return hi

    def smallest_refuting(m: int) -> int:  # guesses + 1 when even all correct is consistent
        if m not in threshold:  # a pure function of the family and the counts
            threshold[m] = accounting_cache.memo(
                "fdp_threshold", [family.key(), m, guesses, alpha], lambda: search(m))
        return threshold[m]

    def refutes(x: np.ndarray, bits: np.ndarray) -> np.ndarray:
        c_star = smallest_refuting(bits.shape[-1])
        scores = model_scores(model, x)  # every simulated audit at once, (n, m)
        return np.array([int(correct_guesses(si, bi, pairs, np.zeros(len(bi)))[0]) >= c_star
                         for si, bi in zip(scores, bits, strict=True)])

    return refutes


def audit_scorer(ctx: CellContext) -> list[MetricRow]:
    """eps_lb and eps_ceiling rows with the verdict against the model's claimed epsilon."""
    a, claim = ctx.cell.spec.audit, ctx.trained.claim
    if not a.enabled or not any(ctx.trained.observations.exposes(s)
                                for s in REVEALED_BY[a.surface]):
        return []
    if a.mode == "multi-run":  # trains its own runs of the cell's DP-SGD plan
        if not claim.is_private:
            return []
        bound = multi_run_bound(ctx.cell.spec, ctx.data, delta=claim.delta,
                                rounds=len(ctx.trained.observations.iterates))
        return audit_rows(ctx.key, bound, claim.epsilon, a.surface, a.mode,
                          {"canary": a.canary, "n_canaries": 2 * a.runs, "included": a.runs})
    if ctx.canaries is None:
        return []
    bound, extra = audit_bound(ctx)
    rows = audit_rows(ctx.key, bound, claim.epsilon, a.surface, a.mode, extra)
    return rows + (forensic_rows(ctx) if is_white_box(ctx) and a.mode == "one-run" else [])
