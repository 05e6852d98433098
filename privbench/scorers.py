"""The scorers every cell runs, in order: utility, membership inference, the privacy claim."""

from __future__ import annotations

import numpy as np

from privbench.attacks import LossAttack
from privbench.attacks.inversion.scorer import inversion_scorer
from privbench.mia import membership_rows
from privbench.results import MetricRow
from privbench.scoring import CellContext, Scorer
from privbench.signals import per_example_losses
from privbench.suites.utility import classification_utility


def utility_scorer(ctx: CellContext) -> list[MetricRow]:
    return classification_utility(ctx.key, ctx.trained.model, ctx.data.x_test, ctx.data.y_test)


def loss_attack_scorer(ctx: CellContext) -> list[MetricRow]:
    """LOSS attack: members are a seeded sample of training records, as many as the non-members
    (the held-out test records)."""
    if not ctx.cell.spec.attacks.loss.enabled:
        return []
    d, attack = ctx.data, LossAttack()
    rng = np.random.default_rng([ctx.cell.spec.seed, 0x1055])
    n = min(len(d.y_train), len(d.y_test))
    members = rng.choice(len(d.y_train), size=n, replace=False)
    nonmembers = rng.choice(len(d.y_test), size=n, replace=False)
    model = ctx.trained.model
    s_in = attack.score(per_example_losses(model, d.x_train[members], d.y_train[members]))
    s_out = attack.score(per_example_losses(model, d.x_test[nonmembers], d.y_test[nonmembers]))
    return membership_rows(ctx.key, attack.name, attack.surface, s_in, s_out)


def claim_scorer(ctx: CellContext) -> list[MetricRow]:
    """The claimed epsilon as a metric row, so gates and comparisons read it like any metric."""
    claim = ctx.trained.claim
    return [MetricRow(ctx.key, "privacy", "epsilon", claim.epsilon, details={
        "delta": claim.delta, "accountant": claim.accountant, "epsilon_rdp": claim.epsilon_rdp,
        "unit": claim.unit})]


SCORERS: list[Scorer] = [utility_scorer, loss_attack_scorer, claim_scorer, inversion_scorer]
