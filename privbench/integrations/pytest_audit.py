"""`privbench_audit(train_fn, claim=...)`: a team's own training function, audited in its tests.

The fixture hands `train_fn` an integration's audit object (an OpacusAudit by default, or a
FlowerAudit), which the function threads through its own training (plant / watch, or wrap).
`train_fn` returns what the audit's `result` needs: for Opacus the PrivacyEngine, or
(engine, model) for input canaries; for Flower nothing; or an AuditResult it made itself. The
audit is then gated as `privbench gate` gates a run (privbench.gates.policy, policy
`audit.eps_lb_not_above_claim`): a failed gate fails the test with the gate's line (gate,
measured eps_LB, threshold, margin).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from privbench.errors import PrivbenchError
from privbench.integrations.result import AuditResult

INTEGRATIONS = ("opacus", "flower")


def make_audit(integration: str, options: dict[str, Any]) -> Any:
    """The audit object of an integration, built from the marker's and call's options.

    Args:
        integration: "opacus" or "flower"; options: the audit's keyword options.
    Raises:
        PrivbenchError: another integration name.
    """
    if integration == "opacus":
        from privbench.integrations.opacus import OpacusAudit

        return OpacusAudit(**options)
    if integration == "flower":
        from privbench.integrations.flower import FlowerAudit

        return FlowerAudit(**options)
    raise PrivbenchError(f"privbench_audit: integration = {integration!r}: use one of "
                         f"{', '.join(INTEGRATIONS)}")


def audit_train_fn(train_fn: Callable[[Any], Any], *, integration: str = "opacus",
                   claim: float | None = None, delta: float = 1e-5,
                   **options: Any) -> AuditResult:
    """Run `train_fn(audit)` and score it; held against `claim` when given.

    Args:
        train_fn: the team's training, called with the integration's audit object.
        integration: "opacus" or "flower".
        claim: the claimed epsilon (default: the integration's re-accounted claim).
        delta: the delta of the claim.
        **options: the audit object's options (canaries, kind, seed, ...).

    Returns:
        The AuditResult (verdict, eps_lb, claim, rows).
    """
    audit = make_audit(integration, options)
    out = train_fn(audit)
    if isinstance(out, AuditResult):
        result = out
    elif integration == "opacus":
        if out is None or (isinstance(out, tuple) and len(out) != 2):
            raise PrivbenchError("privbench_audit: an Opacus train_fn returns its PrivacyEngine "
                                 "(or (engine, model) for input canaries)")
        engine, module = out if isinstance(out, tuple) else (out, None)
        result = audit.result(engine, delta=delta, module=module)
    else:
        result = audit.result(delta=delta)
    return result if claim is None else result.against(float(claim))


def gate(result: AuditResult, name: str, confidence: float = 0.95) -> Any:
    """The eps_lb_not_above_claim gate of privbench.gates.policy on this result (one GateResult).

    Args:
        result: the audit's result; name: the test's name (the gate's cell); confidence: of eps_LB.
    """
    from privbench.gates.evaluate import evaluate
    from privbench.gates.policy import AuditPolicy, Policy
    from privbench.run.results import CellResult

    cell = CellResult(key=name, label=name, axes={}, status="ok", spec={},
                      claim={"epsilon": result.claimed_epsilon, "delta": result.bound.delta},
                      metrics=list(result.rows))
    policy = Policy(audit=AuditPolicy(eps_lb_not_above_claim=True, confidence=confidence),
                    source="privbench_audit")
    return evaluate([cell], policy).results[0]
