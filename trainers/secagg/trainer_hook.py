"""The federated loop's entry to secure aggregation: one object per training run that turns each
cohort's clipped updates into the secure (optionally client-noised) sum, records bytes and
realised noise per round, and states the resulting Claim and exposed surfaces.
"""

from __future__ import annotations

import math
from typing import Any

import dp_accounting
import numpy as np
import torch

from privbench.models.adapter import Params
from privbench.privacy.claim import Claim
from privbench.rng import STREAM_STRIDE, derived_seed
from privbench.spec.schema import PrivacySpec, SecAggSpec, TrainSpec
from privbench.trainers.secagg import ddp_accounting
from privbench.trainers.secagg.aggregate import SecureAggregation, SecureAggregator
from privbench.trainers.secagg.hierarchy import OBSERVERS, run_hierarchical
from privbench.trainers.secagg.protocol import Dropouts
from privbench.trainers.secagg.setup import SecAggAbort


class SecureRounds:
    """State of secure aggregation across a training run (public top-k reference, noise record)."""

    def __init__(self, spec: SecAggSpec, privacy: PrivacySpec, train: TrainSpec,
                 noise_multiplier: float, template: Params, seed: int):
        self.spec = spec
        self.privacy = privacy
        self.train = train
        self.planned_z = noise_multiplier
        self.target_z = noise_multiplier if spec.distributed_dp else 0.0
        self.shapes = {name: t.shape for name, t in template.items()}
        length = sum(t.numel() for t in template.values())
        design = max(2, math.ceil(spec.threshold * train.cohort))
        self.aggregator = SecureAggregator(SecureAggregation(
            clip=privacy.clip, bits=spec.bits, modulus_bits=spec.modulus_bits,
            threshold_fraction=spec.threshold, neighbours=spec.neighbours,
            noise_multiplier=self.target_z, design_contributors=design,
            compression=spec.compression, topk_fraction=spec.topk_fraction, seed=seed), length)
        self.rng = np.random.default_rng(derived_seed(seed, 7, STREAM_STRIDE))
        self.noise_multipliers: list[float] = []
        self.observer_multipliers: dict[str, list[float]] = {k: [] for k in OBSERVERS}

    def sum_round(self, clipped: Params | None, r: int,
                  record: dict[str, Any]) -> tuple[Params | None, float]:
        """The cohort's secure sum as a batch of one (or None), and the z the server must add.

        With distributed DP the clients' noise is already in the sum (server adds none);
        without it the server adds the central noise to the secure sum as before.

        Args:
            clipped: the cohort's clipped updates, stacked (K, ...) (None: an empty cohort);
            r: the round index; record: the round's record (secagg keys are added).
        """
        central_z = 0.0 if self.spec.distributed_dp else self.planned_z
        if clipped is None:
            self._note_round(self.target_z)
            return None, central_z
        total = self._secure_total(clipped, r, record)
        if total is None:
            return None, central_z
        return self._as_params(total), central_z

    def mean_round(self, updates: Params, r: int, record: dict[str, Any]) -> Params:
        """Non-private FedAvg through the secure sum: the contributors' mean (zeros on abort).

        Args:
            updates: the cohort's updates, stacked (K, ...); r: the round index;
            record: the round's record (secagg keys are added).
        """
        total = self._secure_total(updates, r, record)
        if total is None:
            return {n: torch.zeros(s) for n, s in self.shapes.items()}
        return {n: v[0] / record["secagg_contributors"]
                for n, v in self._as_params(total).items()}

    def round_event(self, sampling_rate: float) -> dp_accounting.DpEvent | None:
        """With distributed DP, the event of the round just run, at the noise its sum carried.

        The ledger records this instead of the planned event, so that every reader of the ledger
        (the budget chart, `max_epsilon`, the card) composes what was realised, as the Claim
        does; None without distributed DP (the server's central noise is the planned one).
        """
        if not self.spec.distributed_dp or not self.noise_multipliers:
            return None
        return ddp_accounting.rounds_event(self.noise_multipliers[-1:], sampling_rate)

    def claim(self, central: Claim) -> Claim:
        """With distributed DP, the Claim of the noise each round's sum actually carried.

        Hierarchical runs list each observer's own epsilon in `guarantee_against`: the server's
        and the public's are the Claim's; an intermediate aggregator's is accounted from its
        group's noise alone (coarser PLD grid, still an upper bound).
        """
        if not self.spec.distributed_dp:
            return central
        claim = ddp_accounting.claim_for_rounds(
            noise_multipliers=self.noise_multipliers, sampling_rate=central.sampling_rate,
            delta=self.privacy.delta, target_epsilon=self.privacy.epsilon,
            clip=self.privacy.clip, neighbouring=self.privacy.neighbouring,
            guarantee_against=["the server (it sees only the secure sum, noised by the clients)",
                               OBSERVERS["public"]])
        if self.spec.groups < 2 or not claim.is_private:
            return claim
        delta = self.privacy.delta
        zs = self.observer_multipliers["intermediate_aggregator"]
        eps_agg = ddp_accounting.upper_epsilon(zs, central.sampling_rate, delta,
                                               self.privacy.neighbouring)
        lines = [f"{OBSERVERS['intermediate_aggregator']}: epsilon {eps_agg:.3g} at delta "
                 f"{delta:g} (its group's noise only; realised z >= {min(zs):.3g})"]
        lines += [f"{OBSERVERS[k]}: epsilon {claim.epsilon:.3g} at delta {delta:g} "
                  f"(all clients' and aggregators' noise; z >= {claim.noise_multiplier:.3g})"
                  for k in ("server", "public")]
        return claim.model_copy(update={"guarantee_against": lines})

    def exposed(self) -> dict[str, str]:
        """Surfaces under secure aggregation: no client updates; who sees the aggregates."""
        who = ("the server (the secure sum, already noised by the clients)"
               if self.spec.distributed_dp else
               "the server (the secure sum, before its central noise)")
        if self.spec.groups >= 2:
            who += "; each intermediate aggregator sees its group's sum"
        return {"aggregates": who}

    # -----------------------------------------------------------------------------------------

    def _secure_total(self, updates: Params, r: int, record: dict[str, Any]) -> np.ndarray | None:
        flat = torch.cat([u.flatten(start_dim=1) for u in updates.values()], dim=1)
        x = flat.double().numpy()
        n = x.shape[0]
        drop = np.flatnonzero(self.rng.random(n) < self.spec.dropout_rate)
        record["secagg_dropped"] = int(drop.size)
        try:
            if self.spec.groups >= 2:
                groups = [list(range(g, n, self.spec.groups)) for g in range(self.spec.groups)]
                groups = [g for g in groups if g]
                drops = {g: Dropouts(after_shares=frozenset(int(u) for u in members if u in drop))
                         for g, members in enumerate(groups)}
                out = run_hierarchical(
                    self.aggregator, x, groups, r, self.rng,
                    aggregator_noise_multiplier=self.spec.aggregator_noise
                    if self.spec.distributed_dp else 0.0, client_dropouts=drops)
                total, contributors = out.total, out.contributors
                z = out.noise_multipliers["server"]
                for k, v in out.noise_multipliers.items():
                    self.observer_multipliers[k].append(v)
                record["secagg_upload_bytes"] = out.uploaded_bytes["client"]
                record["secagg_plain_bytes"] = out.plain_bytes
            else:
                res = self.aggregator.run_round(x, r, self.rng,
                                                Dropouts(after_shares=frozenset(map(int, drop))))
                total, contributors, z = res.total, res.contributors, res.noise_multiplier
                record["secagg_upload_bytes"] = res.uploaded_bytes
                record["secagg_plain_bytes"] = res.plain_bytes
        except SecAggAbort as e:
            record["secagg_aborted"] = str(e)
            self._note_round(self.target_z)
            return None
        record["secagg_contributors"] = len(contributors)
        if self.spec.distributed_dp:
            record["secagg_noise_multiplier"] = z
            self.noise_multipliers.append(z)
        return total

    def _note_round(self, z: float) -> None:
        """A round with no decoded sum: it released nothing, accounted at the planned z."""
        if self.spec.distributed_dp:
            self.noise_multipliers.append(z)
            for v in self.observer_multipliers.values():
                v.append(z)

    def _as_params(self, total: np.ndarray) -> Params:
        out, at = {}, 0
        for name, shape in self.shapes.items():
            size = math.prod(shape)
            out[name] = torch.from_numpy(total[at:at + size].copy()).float().reshape(1, *shape)
            at += size
        return out
