"""Attacks: membership inference (and, as they land, gradient inversion and extraction)."""

from privbench.attacks.loss import LossAttack
from privbench.attacks.membership.catalog import MEMBERSHIP_ATTACKS

ATTACKS = {LossAttack.name: LossAttack, **{a.name: a for a in MEMBERSHIP_ATTACKS}}

__all__ = ["ATTACKS", "LossAttack"]
