"""Membership-inference attacks on per-example signals (arrays), so any model can be audited."""

from privbench.attacks.membership.lira import lira_offline, lira_online
from privbench.attacks.membership.rmia import rmia
from privbench.attacks.membership.signals import logit_confidence, true_class_probability

__all__ = ["lira_offline", "lira_online", "logit_confidence", "rmia", "true_class_probability"]
