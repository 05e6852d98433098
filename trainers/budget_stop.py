"""Stopping a run before the round that would take it past privacy.max_epsilon: central DP asks the
ledger once; local and example-level DP ask once per distinct client participation history (clients
with the same history account alike)."""

from __future__ import annotations

import math

import torch

from privbench.privacy import accounting
from privbench.privacy.ledger import PrivacyLedger
from privbench.trainers.mechanisms.base import ClientUpdateHook as ClientUpdateHook
from privbench.trainers.privacy_plan import PrivacyPlan


def budget_stop_message(plan: PrivacyPlan, ledger: PrivacyLedger, r: int,
                        sampled: torch.Tensor, max_epsilon: float) -> str | None:
    """A message when round r would take the ledger past `max_epsilon`, else None.

    Args:
        plan: the run's PrivacyPlan; ledger: the rounds recorded; r: the round about to run
            (0-based); sampled: its cohort; max_epsilon: privacy.max_epsilon.
    """
    if not plan.private or math.isinf(max_epsilon):
        return None
    if plan.mode == "central":
        planned = int(plan.cohort) if plan.sampling == "fixed_cohort" else 0
        exceeds = ledger.would_exceed(plan.run_event(r, planned), max_epsilon)
    else:
        exceeds = any(client_would_exceed(ledger, plan, int(c), r, max_epsilon)
                      for c in distinct_histories(ledger, sampled))
    if not exceeds:
        return None
    return (f"stopped before round {r + 1}: it would take epsilon past privacy.max_epsilon = "
            f"{max_epsilon:g}; the model and Claim are those of round {r}")


def distinct_histories(ledger: PrivacyLedger, sampled: torch.Tensor) -> list[int]:
    """One client per distinct participation history among `sampled` (they account alike).

    Args:
        ledger: the rounds recorded; sampled: the round's cohort.
    """
    seen, out = set(), []
    for c in sampled.tolist():
        key = repr(ledger.client_events(c))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def client_would_exceed(ledger: PrivacyLedger, plan: PrivacyPlan, client: int, r: int,
                         max_epsilon: float) -> bool:
    """Whether round r's event on top of `client`'s recorded events takes it past `max_epsilon`.

    Args:
        ledger: the rounds recorded; plan: the run's PrivacyPlan; client: the client's index;
        r: the round about to run (0-based); max_epsilon: privacy.max_epsilon.
    """
    event = accounting.compose_steps([*ledger.client_events(client), plan.client_event(r)])
    return accounting.epsilon_with_fallback(event, ledger.delta, ledger.neighbouring)[0] \
        > max_epsilon
