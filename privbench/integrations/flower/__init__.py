"""Audit a user's Flower federation: canary clients join it, every round's model is recorded.

    audit = FlowerAudit(canaries=200, seed=0)
    strategy = audit.wrap(DifferentialPrivacyServerSideFixedClipping(FedAvg(...), z, C, n))
    ... the user's ServerApp returns `strategy`; run_simulation(...) as usual ...
    result = audit.result(delta=1e-5, claim=2.0)

The audit is privbench's client-level one-run audit on `iterates` (privbench.audit.canaries):
m canary clients, each in the federation with probability 1/2, send a fixed random unit vector
(times `canary_norm * clip`) through the user's own DP strategy (CanaryClients); the global model
of every round is recorded (RecordRounds); each canary is scored by its likelihood ratio over the
rounds' steps (`round_likelihood_scores`) and the one-run bound certifies eps_LB.

The claim: the DP wrapper's configuration (noise multiplier, clip, rounds that ran, the clients
sampled per round) accounted by privbench (dp_accounting PLD): every client each round is a
Gaussian under add/remove-one; a fixed-size sample of the clients is sampling without
replacement under replace-one. `claim=` states the epsilon the team claims, when it differs from
what the strategy was configured with (the verdict is held against it; both are shown).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from privbench.audit.canaries import round_likelihood_scores
from privbench.audit.one_run_bound import one_run_bound
from privbench.audit.verdict import audit_rows
from privbench.errors import PrivbenchError
from privbench.integrations.flower.canary_clients import CanaryClients
from privbench.integrations.flower.record_rounds import RecordRounds
from privbench.integrations.result import AuditResult
from privbench.privacy import accounting
from privbench.privacy.claim import Claim, claim_from_event

__all__ = ["CanaryClients", "FlowerAudit", "FlowerAuditError", "RecordRounds"]


class FlowerAuditError(PrivbenchError):
    """A strategy or run the Flower audit cannot use: one line naming what and the fix."""


def _dp_wrapper(strategy: Any) -> Any:
    """The Flower central-DP wrapper with fixed clipping at or inside `strategy`, else None."""
    from flwr.server.strategy import (
        DifferentialPrivacyClientSideFixedClipping,
        DifferentialPrivacyServerSideFixedClipping,
    )

    seen = 0
    while strategy is not None and seen < 16:
        if isinstance(strategy, (DifferentialPrivacyServerSideFixedClipping,
                                 DifferentialPrivacyClientSideFixedClipping)):
            return strategy
        strategy, seen = getattr(strategy, "strategy", None), seen + 1
    return None


class FlowerAudit:
    """Canary clients for a user's Flower strategy, and the audit of the run afterwards.

    Args:
        canaries: m, the number of canary clients drawn (each in the federation w.p. 1/2).
        canary_norm: a canary update's norm, times the DP wrapper's clipping norm.
        alpha: the lower bound holds with confidence 1 - alpha.
        selection: one-run guess counts chosen on half the canaries ("split") or "union".
        seed: draws the bits, the canary directions and their rounds.
    """

    def __init__(self, canaries: int = 200, *, canary_norm: float = 1.0, alpha: float = 0.05,
                 selection: Literal["split", "union"] = "split", seed: int = 0) -> None:
        if canaries < 4:
            raise FlowerAuditError(f"flower audit: canaries = {canaries}: a one-run audit needs "
                                   "at least 4 (hundreds to test a claim above 1)")
        if not 0 < alpha < 0.5:
            raise FlowerAuditError(f"flower audit: alpha = {alpha}: must be in (0, 0.5)")
        if canary_norm <= 0:
            raise FlowerAuditError(f"flower audit: canary_norm = {canary_norm}: must be > 0")
        self.m, self.canary_norm, self.alpha = canaries, canary_norm, alpha
        self.selection, self.seed = selection, seed
        self.rng = np.random.default_rng([seed, 0xCA9A])
        self.bits = self.rng.random(canaries) < 0.5
        self.canaries: CanaryClients | None = None
        self.recorder: RecordRounds | None = None
        self.dp: Any = None

    def wrap(self, strategy: Any) -> RecordRounds:
        """The strategy to hand Flower: RecordRounds(CanaryClients(strategy)).

        Args:
            strategy: the user's strategy with Flower's central DP wrapper
                (DifferentialPrivacyServerSideFixedClipping or ...ClientSideFixedClipping) at or
                inside it.

        Returns:
            The wrapped strategy; the user's ServerApp returns it instead of `strategy`.
        """
        from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping

        dp = _dp_wrapper(strategy)
        if dp is None:
            raise FlowerAuditError(
                f"flower audit: {type(strategy).__name__} has no Flower DP wrapper with fixed "
                "clipping: wrap your strategy in DifferentialPrivacyServerSideFixedClipping (or "
                "...ClientSideFixedClipping) and pass that")
        client_side = isinstance(dp, DifferentialPrivacyClientSideFixedClipping)
        # Client-side clipping happens in the clients' mod, which canary clients do not run:
        # their updates are sent already within the clip, as the mod would leave them.
        scale = min(self.canary_norm, 1.0) if client_side else self.canary_norm
        self.dp = dp
        self.canaries = CanaryClients(strategy, self.bits, scale * dp.clipping_norm, self.rng)
        self.recorder = RecordRounds(self.canaries)
        return self.recorder

    def claim(self, delta: float) -> Claim:
        """The Claim of the run as the DP wrapper was configured, accounted by privbench."""
        assert self.recorder is not None and self.canaries is not None
        rounds = len(self.recorder.iterates)
        z, clip = float(self.dp.noise_multiplier), float(self.dp.clipping_norm)
        rates = self.canaries.rates[:rounds]
        everyone = all(r >= 1.0 for r in rates)
        available = max(1, self.canaries._available)
        sampled = self.canaries._sampled
        step = accounting.sampled_gaussian_event(
            z, "none" if everyone else "fixed_cohort", population=available,
            sample_size=sampled)
        event = accounting.compose_steps([step] * rounds)
        return claim_from_event(
            event, delta=delta, target_epsilon=math.inf, unit="client",
            neighbouring="add_or_remove_one" if everyone else "replace_one",
            sampling="none" if everyone else "fixed_cohort", noise_multiplier=z,
            sampling_rate=float(np.mean(rates)) if rates else 1.0, steps=rounds, clip=clip,
            guarantee_against=["anyone who sees the global model of every round"],
            trusted=["the server (it sees each client's update before noise)"],
            notes=[f"accounted from the Flower {type(self.dp).__name__} configuration: noise "
                   f"multiplier {z:g}, clip {clip:g}, {sampled} of {available} clients per "
                   f"round, {rounds} rounds"])

    def result(self, *, delta: float, claim: float | None = None,
               experiment: str = "flower") -> AuditResult:
        """Score the canary clients on the recorded rounds; hold eps_LB against the claim.

        Args:
            delta: the delta of the claim.
            claim: the epsilon the team claims (default: the configured run's epsilon).
            experiment: the experiment name on the metric rows.

        Returns:
            The bound, the configured Claim, the claimed epsilon and the "audit" metric rows.
        """
        if self.recorder is None or self.canaries is None:
            raise FlowerAuditError("flower audit: call wrap(strategy) and hand Flower the "
                                   "strategy it returns, before the run")
        rec = self.recorder
        if rec.initial is None or not rec.iterates or self.canaries.vectors is None:
            raise FlowerAuditError("flower audit: no round was recorded: the ServerApp must "
                                   "return the strategy wrap() returned, in this process")
        configured = self.claim(delta)
        claimed = configured.epsilon if claim is None else float(claim)
        names = [str(i) for i in range(len(rec.initial))]

        def params(arrays: list[np.ndarray]) -> dict[str, torch.Tensor]:
            return {n: torch.from_numpy(np.asarray(a, dtype=np.float64))
                    for n, a in zip(names, arrays, strict=True)}

        # Blind to the bits: the expected canary clients in a round, not the realised ones.
        q = float(np.mean(self.canaries.rates))
        cohort = (self.canaries._sampled + q * self.m / 2)
        signal = min(self.canaries.norm, float(self.dp.clipping_norm)) / cohort
        scores = round_likelihood_scores(self.canaries.vectors, params(rec.initial),
                                         [params(a) for a in rec.iterates], signal, q)
        rng = np.random.default_rng([self.seed, 0xA0D1])
        bound = one_run_bound(scores, self.bits, delta=delta, alpha=self.alpha,
                              selection=self.selection, rng=rng)
        details = {"canary": "random-unit", "n_canaries": self.m,
                   "included": int(self.bits.sum()), "rounds": len(rec.iterates),
                   "configured_epsilon": configured.epsilon,
                   "dp_strategy": type(self.dp).__name__}
        rows = audit_rows(experiment, bound, claimed, "iterates", "one-run", details)
        return AuditResult("flower", bound, configured, claimed, rows, "iterates", details)
