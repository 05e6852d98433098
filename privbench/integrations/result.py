"""The result of auditing a user's own training run (Opacus, Flower, a pytest train function)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from privbench.audit.estimators import EpsilonBound
from privbench.audit.verdict import Verdict, audit_rows, verdict
from privbench.privacy.claim import Claim
from privbench.run.results import MetricRow


@dataclass(frozen=True)
class AuditResult:
    """An eps_LB and its verdict against the claimed epsilon, with the Claim of what ran.

    `claimed_epsilon` is what the verdict is held against: the re-accounted Claim's epsilon, or
    the epsilon the user states when they state one (the Claim then shows what was configured).
    """

    source: str  # "opacus", "flower", ...
    bound: EpsilonBound
    claim: Claim
    claimed_epsilon: float
    rows: list[MetricRow]
    surface: str
    details: dict[str, Any] = field(default_factory=dict)  # JSON-ready, on the rows too
    accounting: Any = None  # the integration's comparison with its own accountant, if any

    @property
    def eps_lb(self) -> float:
        """The audit's lower bound on epsilon."""
        return self.bound.eps_lb

    @property
    def verdict(self) -> Verdict:
        """The verdict of eps_LB and the audit's ceiling against the claimed epsilon."""
        return verdict(self.bound.eps_lb, self.bound.ceiling, self.claimed_epsilon)

    def line(self) -> str:
        """One line: verdict, eps_LB against the claim, the design's ceiling."""
        configured = ("" if abs(self.claim.epsilon - self.claimed_epsilon) < 5e-4
                      else f"; the run as configured: {self.claim.epsilon:.3f}")
        return (f"{self.source} audit: {self.verdict} eps_LB {self.eps_lb:.3f} (ceiling "
                f"{self.bound.ceiling:.2f}, {1 - self.bound.alpha:.0%} confidence, "
                f"{self.bound.n} canaries certify) vs claimed epsilon "
                f"{self.claimed_epsilon:.3f}{configured}")

    def against(self, claimed: float) -> AuditResult:
        """The same audit held against another claimed epsilon (rows and verdict redone)."""
        experiment = self.rows[0].experiment if self.rows else self.source
        rows = audit_rows(experiment, self.bound, claimed, self.surface, "one-run", self.details)
        return dataclasses.replace(self, claimed_epsilon=claimed, rows=rows)
