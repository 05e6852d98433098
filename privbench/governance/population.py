"""The population: the clients that may be sampled, round by round (consent and onboarding).

Built from the client registry (privbench.governance.consent) and the onboarding checks
(privbench.governance.onboarding), it is the trainer's `population` hook: each round, after the
cohort is
drawn, clients outside the population that round are removed from it. The cohort is drawn from
the same random stream as without a registry, so every other client's draws are unchanged.

Why the accounting stays valid: under Poisson sampling each client joins each round
independently at the fixed rate q (= expected cohort / clients) of the plan. A client that never
consented, was refused at onboarding or has withdrawn is simply never in the cohort: its
inclusion probability is 0 <= q, the other clients' stay q, and the rounds it no longer takes
part in only lose its term from the sum. Every client's own privacy loss is still bounded by the
claimed Poisson-subsampled event, and a past round's accounting (its ledger line) never changes:
a withdrawal only affects rounds after it. Rows of the client data beyond the registry's clients
(the audit's planted canary clients) are synthetic and always in the population.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from privbench.governance.consent import (
    DEFAULT_SCOPE,
    consent_status,
    load_registry,
    registry_sha256,
)
from privbench.governance.onboarding import ModelNeeds, refusal

log = logging.getLogger("privbench.governance.population")

HANDLING = ("a withdrawal made during round W takes effect from round W + 1: the client is "
            "removed from every cohort drawn after it and is never sampled again; its earlier "
            "rounds stay in the model and in the ledger")
ACCOUNTING = ("the accounting stays valid: clients are Poisson-sampled at a fixed rate per "
              "client, so a client outside the population (no consent, refused at onboarding, "
              "withdrawn) has inclusion probability 0 instead of q; removing it only removes "
              "its terms from later rounds, every other client's rate and every past round's "
              "ledger entry are unchanged")
ACCOUNTING_FIXED_COHORT = (
    "the accounting stays valid: each round's cohort is drawn uniformly as without a registry, "
    "and clients outside the population (no consent, refused at onboarding, withdrawn) are "
    "removed from it as dropouts are; every round is accounted with its realised cohort, and "
    "a past round's ledger entry never changes")
REFUSED = ("refused clients are outside the population: they are never sampled, and the "
           "accounted per-client sampling rate of the population does not change")


class LedgerLike(Protocol):
    """What the population writes to: the privacy ledger (privbench.privacy.ledger)."""

    def record_entry(self, kind: str, **info: Any) -> None: ...


class PopulationHook(Protocol):
    """The trainer's population hook (train_fedavg's `population`)."""

    def filter(self, round_no: int, sampled: torch.Tensor, record: dict[str, Any],
               ledger: LedgerLike) -> torch.Tensor:
        """Round `round_no`'s drawn cohort without the clients outside the population; may
        add keys to the round's record and lines to the ledger.

        Args:
            round_no: the round (1-based); sampled: the drawn client indices;
            record: the round's record; ledger: the privacy ledger.
        """
        ...


@dataclass
class Population:
    """The clients of `n_registered` registry rows that may train, round by round.

    Attributes:
        n_registered: clients the registry speaks for (the data set's clients, 0..n-1).
        status: each consenting client's ConsentStatus (clients missing here never consented).
        refused: client -> the onboarding check it failed.
        registry: the registry's path; registry_sha256: its content hash; scope: the consent
            scope training needs.
    """

    n_registered: int
    status: dict[int, Any]
    refused: dict[int, str] = field(default_factory=dict)
    registry: str = ""
    registry_sha256: str = ""
    scope: str = DEFAULT_SCOPE
    sampling: str = "poisson"  # train.sampling: what the card says about the accounting

    def allowed(self, client: int, round_no: int) -> bool:
        """Whether `client` may be sampled in round `round_no` (1-based).

        Args:
            client: the client's index (at or above n_registered: an audit canary, always allowed);
            round_no: the round.
        """
        if client >= self.n_registered:  # the audit's synthetic canary clients
            return True
        s = self.status.get(client)
        return s is not None and client not in self.refused and s.may_train(round_no)

    def members(self) -> list[int]:
        """Registered clients in the population at the start of the run."""
        return [c for c in range(self.n_registered) if self.allowed(c, 1)]

    def withdrawals(self) -> dict[int, int]:
        """Client -> the round it withdrew in, for consenting, onboarded clients that withdrew."""
        return {c: s.withdrawn_in_round for c, s in sorted(self.status.items())
                if s.withdrawn_in_round is not None and c not in self.refused}

    def filter(self, round_no: int, sampled: torch.Tensor, record: dict[str, Any],
               ledger: LedgerLike) -> torch.Tensor:
        """Round `round_no`'s cohort without the clients outside the population.

        Before round 1 the ledger gets the population (members, refusals with reasons); at the
        start of round W + 1 it gets one "withdrawal" line per client that withdrew in round W.

        Args:
            round_no: the round (1-based); sampled: the drawn client indices;
            record: the round's record ("outside_population" added when some are dropped);
            ledger: the privacy ledger.
        Returns:
            The kept client indices (`sampled` itself when none is dropped).
        """
        if round_no == 1:
            ledger.record_entry("population", registry=self.registry,
                                registry_sha256=self.registry_sha256, scope=self.scope,
                                members=len(self.members()),
                                not_consenting=self.not_consenting(),
                                refused={str(c): why for c, why in sorted(self.refused.items())})
        for c, w in self.withdrawals().items():
            if w + 1 == round_no:
                ledger.record_entry("withdrawal", client=c, withdrawn_in_round=w,
                                    excluded_from_round=max(w + 1, 1),
                                    withdrawn_at=self.status[c].withdrawn_at)
                log.info("client %d withdrew in round %d: never sampled from round %d on",
                         c, w, max(w + 1, 1))
        keep = [int(c) for c in sampled if self.allowed(int(c), round_no)]
        if len(keep) < sampled.numel():
            record["outside_population"] = int(sampled.numel() - len(keep))
            return torch.tensor(keep, dtype=torch.long)
        return sampled

    def not_consenting(self) -> list[int]:
        """The registered clients with no grant for the scope, in index order."""
        return [c for c in range(self.n_registered) if c not in self.status]

    def card(self, rounds_run: int) -> dict[str, Any]:
        """The privacy card's `population` section: how consent, onboarding and withdrawals were
        handled and why the claim still holds."""
        return {
            "registry": self.registry, "registry_sha256": self.registry_sha256,
            "consent_scope": self.scope,
            "consent_text_versions": sorted({s.text_version for s in self.status.values()}),
            "clients_in_population": len(self.members()),
            "not_consenting": self.not_consenting(),
            "refused_at_onboarding": {str(c): why for c, why in sorted(self.refused.items())},
            "onboarding": REFUSED,
            "withdrawals": [{"client": c, "withdrawn_in_round": w,
                             "excluded_from_round": max(w + 1, 1),
                             "took_effect": max(w + 1, 1) <= rounds_run}
                            for c, w in self.withdrawals().items()],
            "withdrawal_handling": HANDLING,
            "accounting": ACCOUNTING if self.sampling == "poisson" else ACCOUNTING_FIXED_COHORT,
        }


def build_population(path: Path, n_clients: int, needs: ModelNeeds,
                     scope: str = DEFAULT_SCOPE, check_devices: bool = True) -> Population:
    """The population of a registry for a data set of `n_clients` clients and a model's needs.

    Args:
        path: the registry; n_clients: the data set's clients; needs: the model's needs.
        scope: the consent scope training needs.
        check_devices: check every consenting client's device profile
        (privbench.governance.onboarding);
            a refusal is logged with its reason.
    """
    registry = load_registry(path)
    status = {}
    for cid, entry in registry["clients"].items():
        s = consent_status(entry, scope)
        if s.granted and int(cid) < n_clients:
            status[int(cid)] = s
    refused = {}
    for c in sorted(status) if check_devices else []:
        why = refusal(registry["clients"][str(c)].get("device"), needs)
        if why is not None:
            refused[c] = why
            log.warning("client %d refused at onboarding: %s", c, why)
    return Population(n_clients, status, refused, str(path), registry_sha256(path), scope)
