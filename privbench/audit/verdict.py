"""The verdict of an audit: its epsilon lower bound held against the model's claimed epsilon.

FAIL: eps_LB > claimed epsilon, statistically strong evidence (confidence 1 - alpha) that the DP
code or its accounting is wrong. TOO_SMALL: the design's ceiling is at or below the claim, so no
outcome of this audit could refute it (a larger audit is needed); reported as its own verdict, not
as a PASS, so that a gate never mistakes "could not test" for "tested". PASS: the audit could
have refuted the claim and did not. An audit can refute a claim, never certify it.
"""

from __future__ import annotations

import math
from typing import Literal

from privbench.audit.estimators import EpsilonBound
from privbench.run.results import MetricRow

Verdict = Literal["PASS", "FAIL", "TOO_SMALL"]


def verdict(eps_lb: float, ceiling: float, claimed: float) -> Verdict:
    """FAIL when eps_LB exceeds the claim, TOO_SMALL when the ceiling cannot, PASS otherwise."""
    if eps_lb > claimed:
        return "FAIL"
    if ceiling <= claimed:
        return "TOO_SMALL"
    return "PASS"


def verdict_note(v: Verdict, bound: EpsilonBound, claimed: float) -> str:
    """One sentence a reader can act on."""
    conf = f"{1 - bound.alpha:.0%}"
    if v == "FAIL":
        return (f"eps_LB {bound.eps_lb:.3g} exceeds the claimed epsilon {claimed:.3g} at "
                f"{conf} confidence: the DP implementation or its accounting is wrong")
    if v == "TOO_SMALL":
        if math.isinf(claimed):
            return "no DP claim (epsilon = inf): there is nothing for an audit to refute"
        return (f"this audit is too small to test the claim: its ceiling {bound.ceiling:.3g} "
                f"(every guess right, {bound.n} trials or canaries) is not above the claimed "
                f"epsilon {claimed:.3g}")
    return (f"eps_LB {bound.eps_lb:.3g} at {conf} confidence is within the claimed epsilon "
            f"{claimed:.3g}; an audit can refute a claim, never certify it")


def audit_rows(experiment: str, bound: EpsilonBound, claimed: float, surface: str, mode: str,
               extra: dict | None = None) -> list[MetricRow]:
    """The "audit" scorer's rows: eps_lb (ci_low = eps_lb: a one-sided interval) and eps_ceiling."""
    v = verdict(bound.eps_lb, bound.ceiling, claimed)
    tightness = bound.eps_lb / claimed if math.isfinite(claimed) and claimed > 0 else None
    details = {
        "verdict": v, "note": verdict_note(v, bound, claimed), "alpha": bound.alpha,
        "confidence": 1 - bound.alpha, "n": bound.n, "mode": mode, "method": bound.method,
        "claimed_epsilon": claimed, "delta": bound.delta, "tightness": tightness,
        "eps_ceiling": bound.ceiling, "interval": f"one-sided [eps_lb, inf) at {1 - bound.alpha:g}",
        **bound.details, **(extra or {}),
    }
    return [
        MetricRow(experiment, "audit", "eps_lb", bound.eps_lb, bound.eps_lb, None, surface,
                  details),
        MetricRow(experiment, "audit", "eps_ceiling", bound.ceiling, None, None, surface,
                  {"verdict": v, "alpha": bound.alpha, "n": bound.n, "mode": mode,
                   "claimed_epsilon": claimed, "method": bound.method}),
    ]
