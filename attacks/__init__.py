"""Attacks: membership inference (and, as they land, gradient inversion and extraction)."""

from privbench.attacks.loss import LossAttack

ATTACKS = {LossAttack.name: LossAttack}

__all__ = ["ATTACKS", "LossAttack"]
