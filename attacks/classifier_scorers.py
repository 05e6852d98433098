"""The classifier scorers of utility, the LOSS attack and the privacy claim (registered, with the
other scorers, in privbench/scoring.py's SCORERS)."""

from __future__ import annotations

from privbench.attacks import LossAttack
from privbench.attacks.membership.population import audit_pool
from privbench.attacks.membership.shadow_attacks import attack_rows
from privbench.privacy import accounting
from privbench.privacy.claim import Claim
from privbench.query.classifier import per_example_losses
from privbench.run.results import MetricRow
from privbench.scoring import CellContext
from privbench.suites.utility import classification_utility


def utility_scorer(ctx: CellContext) -> list[MetricRow]:
    """The "utility" scorer: the released classifier's test accuracy, loss and collapse rows."""
    return classification_utility(ctx.key, ctx.trained.model, ctx.data.x_test, ctx.data.y_test)


def loss_attack_scorer(ctx: CellContext) -> list[MetricRow]:
    """LOSS attack on the whole audit pool: every training record (members) against every test
    and population record (non-members), the same records LiRA and RMIA are scored on."""
    if not ctx.cell.spec.attacks.loss.enabled:
        return []
    attack = LossAttack()
    pool = audit_pool(ctx.data, ctx.shards)
    scores = attack.score(per_example_losses(ctx.trained.model, pool.x, pool.y))
    return attack_rows(ctx.key, attack.name, scores, pool, ctx.cell.spec.data.clients)


def claim_scorer(ctx: CellContext) -> list[MetricRow]:
    """The claimed epsilon as a metric row, so gates and comparisons read it like any metric."""
    claim = ctx.trained.claim
    return [MetricRow(ctx.key, "privacy", "epsilon", claim.epsilon, details={
        "delta": claim.delta, "accountant": claim.accountant, "epsilon_rdp": claim.epsilon_rdp,
        "unit": claim.unit, "precision": claim_precision(claim)})]


def claim_precision(claim: Claim) -> float:
    """How far two computations of the same claimed epsilon may differ: the PLD accountant's
    discretisation interval (its pessimistic epsilon moves by less than one grid step when the
    grid or a rounding differs), or 1e-9 for RDP, whose value is exact for its orders."""
    if claim.accountant == "pld":
        return float(claim.pld_grid or accounting.PLD_DISCRETIZATION)
    return 1e-9

