"""Which DP guarantee a run trains for, its calibrated noise, the DP event of each round, and the
Claim built from what ran.

Three private settings share one federated loop:
- client level, central DP (McMahan et al. 2018): the server clips each update to C, adds noise
  to the sum; accounted as a sampled Gaussian per round, with client-sampling amplification
  (Poisson or fixed-size cohorts). Guarantee against whoever sees the server's outputs.
- client level, local DP: each client clips and noises its own update before sending it; the
  server is not trusted. Between two data sets of one client (replace-one, sensitivity 2C), each
  participation is a Gaussian release; a client's epsilon composes its own participations.
- example level: DP-SGD with Poisson-sampled records inside each client (trainers/dpsgd.py). Each
  participation is `local_steps` Poisson-subsampled Gaussian steps on that client's records.
  Client-sampling amplification is conservatively NOT used: every local step that touched an
  example's client is counted.
For the two per-client settings, a client takes part in at most `participation_cap` rounds (the
plan the noise is calibrated for); a client that reached it sits out, so the target holds for
every client whatever the draw.

What runs each round (clipping, noise, aggregation) is the plan's `mechanism`, the registered
mechanism the target selects (trainers/mechanisms/), wrapped by a noise schedule and adaptive
clipping when the spec asks; the plan reads each round's accounted noise from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import dp_accounting
from scipy import stats

from privbench.privacy import accounting
from privbench.privacy.claim import Claim, claim_from_event
from privbench.spec.schema import PrivacySpec, TrainSpec
from privbench.trainers import mechanisms
from privbench.trainers.adaptive_clip import update_noise_multiplier
from privbench.trainers.mechanisms.base import Mechanism

PUBLIC = [
    "anyone querying the released model (final_model)",
    "anyone holding the released weights (final_weights)",
    "anyone who sees every round's global model (iterates)",
]
SERVER = ["the server (each client's update and the aggregates)", "other clients"]


@dataclass
class PrivacyPlan:
    """The calibrated plan of one run, and the events each round adds to the ledger."""

    mode: str  # the accounting family: "none", "central", "local", "example"
    privacy: PrivacySpec
    n_clients: int
    rounds: int
    cohort: float
    sampling: str
    z: float = 0.0  # base noise multiplier of the accounted event (relative to the clip)
    local_steps: int = 0
    record_rate: float = 1.0
    participation_cap: int = 0
    round_factors: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mechanism_name: str = "none"  # the registered base mechanism (trainers/mechanisms/)
    _mechanism: Mechanism | None = field(default=None, repr=False, compare=False)

    @property
    def private(self) -> bool:
        """Whether the run has DP (any mode but "none")."""
        return self.mode != "none"

    @property
    def per_client(self) -> bool:
        """Whether each client accounts its own rounds (local or example level)."""
        return self.mode in ("local", "example")

    @property
    def mechanism(self) -> Mechanism:
        """The mechanism stack that runs each round at this plan's calibrated z."""
        if self._mechanism is None or self._mechanism.z != self.z:
            p = self.privacy
            adaptive = (dict(target_quantile=p.target_quantile, clip_lr=p.clip_lr,
                             count_noise_multiplier=p.count_noise_multiplier,
                             expected_cohort=self.cohort)
                        if self.mode == "central" and p.adaptive_clip else None)
            self._mechanism = mechanisms.build(mechanisms.MECHANISMS.get(self.mechanism_name),
                                               self.z, round_factors=self.round_factors,
                                               adaptive=adaptive)
        return self._mechanism

    def round_z(self, r: int) -> float:
        """The accounted noise multiplier of round r (0-based)."""
        return self.mechanism.accounted_z(r)

    def update_noise_multiplier(self, r: int) -> float:
        """The noise actually added to the clipped updates in round r (relative to the clip)."""
        return self.mechanism.noise_multiplier(r)

    # -- events -------------------------------------------------------------------------------
    def _gaussian(self, z: float) -> dp_accounting.DpEvent:
        return dp_accounting.GaussianDpEvent(z)

    def client_event(self, r: int) -> dp_accounting.DpEvent | None:
        """One participant's event in round r (per-client settings), else None."""
        z = self.round_z(r)
        if self.mode == "local":
            return self._gaussian(z)
        if self.mode == "example":
            step = accounting.sampled_gaussian_event(z, "poisson", self.record_rate)
            return accounting.compose_steps([step] * self.local_steps)
        return None

    def run_event(self, r: int, realised_cohort: int) -> dp_accounting.DpEvent:
        """Round r's run-level event: the sampled Gaussian for central DP; for the per-client
        settings, one participation (an upper bound for any single client).

        Args:
            r: the round (0-based); realised_cohort: the fixed cohort's realised size (0: planned).
        """
        if self.mode == "central":
            return self._central_plan().step_event(self.round_z(r), sample_size=realised_cohort)
        event = self.client_event(r)
        return event if event is not None else dp_accounting.NoOpDpEvent()

    def _central_plan(self) -> accounting.Plan:
        n = self.n_clients
        return accounting.Plan(steps=self.rounds, sampling=self.sampling,
                               sampling_rate=self.cohort / n, population=n,
                               sample_size=int(self.cohort), scales=self._scales())

    def _scales(self) -> tuple[float, ...]:
        return tuple(float(f) for f in self.privacy.noise_schedule)

    # -- the claim ----------------------------------------------------------------------------
    def claim(self, ledger: Any, rounds_run: int, clip: float | None) -> Claim:
        """The Claim of what the ledger recorded: run event (central) or the worst client.

        Args:
            ledger: the run's PrivacyLedger; rounds_run: rounds done; clip: the final C (or None).
        """
        p = self.privacy
        base: dict[str, Any] = dict(delta=p.delta, target_epsilon=p.epsilon,
                                    neighbouring=p.neighbouring, clip=clip)
        if not self.private:
            return claim_from_event(dp_accounting.NonPrivateDpEvent(), unit=p.unit,
                                    sampling="none", noise_multiplier=0.0,
                                    sampling_rate=self.cohort / self.n_clients,
                                    steps=rounds_run, guarantee_against=[], **base)
        notes = list(self.notes)
        if p.neighbouring == "replace_one":
            notes.append("replace-one neighbours: a replaced record moves a clipped sum by up to "
                         "2C; the RDP accountant is given z / 2 accordingly")
        z_run = self.update_noise_multiplier(0) if rounds_run else self.z
        extra: dict[str, Any] = {}
        if self.mode == "central":
            event = ledger.run_event()
            sampling = self.sampling if self.cohort < self.n_clients else "none"
            rate, steps = self.cohort / self.n_clients, rounds_run
            against, trusted = PUBLIC, ["the server (it sees each clipped update before noise)"]
            if p.adaptive_clip:
                extra["count_noise_multiplier"] = p.count_noise_multiplier
                notes.append(
                    "adaptive clipping: the accounted Gaussian has z = (z_update^-2 + "
                    "(2 sigma_b)^-2)^-1/2, covering the update sum and the noised count together")
        else:
            event, steps = worst_client_event(ledger, self.delta_key())
            if self.mode == "local":
                sampling, rate = "none", 1.0
                against, trusted = [*SERVER, *PUBLIC], ["each client's own device"]
                notes.append("local DP: the guarantee is each client's own, from the rounds it "
                             "took part in; no amplification by the server's sampling")
            else:
                sampling, rate = "poisson", self.record_rate
                steps *= self.local_steps
                against, trusted = [*SERVER, *PUBLIC], ["each client's own device"]
                notes.append("example level: every local DP-SGD step of every round a client "
                             "took part in is counted; amplification by client sampling is "
                             "conservatively not used")
        if p.noise_schedule:
            notes.append(f"noise schedule: factors {p.noise_schedule} over equal spans of the "
                         "rounds, accounted as a composition of different Gaussian events")
        return claim_from_event(event, unit=p.unit, sampling=sampling, noise_multiplier=z_run,
                                sampling_rate=rate, steps=steps, guarantee_against=against,
                                setting="local" if self.mode == "local" else "central",
                                trusted=trusted, notes=notes, **extra, **base)

    def delta_key(self) -> tuple[float, str]:
        """(delta, neighbouring): what the ledger's per-client accounting is keyed by."""
        return self.privacy.delta, self.privacy.neighbouring


def worst_client_event(ledger: Any, key: tuple[float, str]) -> tuple[dp_accounting.DpEvent, int]:
    """The composed event of the client with the largest epsilon (and its participations).

    Clients with the same sequence of events share one accounting computation.

    Args:
        ledger: the run's PrivacyLedger; key: (delta, neighbouring).
    """
    delta, neighbouring = key
    histories: dict[str, tuple[dp_accounting.DpEvent, int]] = {}
    for client in ledger.participations():
        events = ledger.client_events(client)
        event = accounting.compose_steps(events)
        histories[repr(event)] = (event, len(events))
    if not histories:
        return dp_accounting.NoOpDpEvent(), 0
    return max(histories.values(), key=lambda ev: accounting.epsilon_with_fallback(
        ev[0], delta, neighbouring)[0] if ev[1] else 0.0)


def participation_cap(rounds: int, rate: float) -> int:
    """Rounds a client may join: all of them at rate 1, else the 99.9% Binomial quantile.

    Args:
        rounds: the run's rounds; rate: a client's chance to join each.
    """
    if rate >= 1.0:
        return rounds
    return int(min(rounds, max(1, stats.binom.ppf(0.999, rounds, rate))))


def example_sampling(train: TrainSpec, mean_shard: float) -> tuple[float, int]:
    """DP-SGD's Poisson record rate and local steps per participation for clients of this size.

    Args:
        train: the batch size and local epochs.
        mean_shard: the mean number of records per client.
    Returns:
        (record rate q = batch / records, capped at 1; steps = local epochs x round(1 / q)).
    """
    rate = min(1.0, train.batch_size / mean_shard)
    return rate, train.local_epochs * max(1, round(1 / rate))


def make_plan(train: TrainSpec, privacy: PrivacySpec, n_clients: int,
              mean_shard: float, *, distributed: bool = False) -> PrivacyPlan:
    """Calibrate the run's noise so that the whole plan meets the target epsilon.

    Args:
        train, privacy: the plan and the DP target; n_clients: the clients sampled from.
        mean_shard: the mean number of records per client (example-level sampling).
        distributed: secure aggregation with client-added noise (`secagg.distributed_dp`).
    Returns:
        The plan: its registered mechanism (`mechanisms.select`), accounting family and z.
    """
    entry = mechanisms.select(math.isfinite(privacy.epsilon), privacy.unit, privacy.setting,
                              distributed)
    mode = entry.accounting
    factors = round_factors(privacy.noise_schedule, train.rounds)
    plan = PrivacyPlan(mode=mode, privacy=privacy, n_clients=n_clients, rounds=train.rounds,
                       cohort=train.cohort, sampling=train.sampling, round_factors=factors,
                       mechanism_name=entry.name)
    if mode == "example":
        plan.record_rate, plan.local_steps = example_sampling(train, mean_shard)
    if mode == "none":
        return plan
    if train.dropout > 0 and mode == "central" and train.sampling == "poisson":
        plan.notes.append(f"dropouts (rate {train.dropout:g}) only lower the realised sampling "
                          "rate; accounted at the full rate, an upper bound")
    if mode == "central":
        calib = plan._central_plan()
        z = accounting.calibrate_plan(privacy.epsilon, privacy.delta, calib, privacy.neighbouring)
        if privacy.adaptive_clip:  # the combined multiplier must leave room for the count
            update_noise_multiplier(z, privacy.count_noise_multiplier)
        plan.z = z
        return plan
    rate = train.cohort / n_clients
    plan.participation_cap = participation_cap(train.rounds, rate)
    worst = sorted(factors)[: plan.participation_cap]  # a client's least-noisy rounds
    scales = () if all(f == 1.0 for f in worst) else tuple(worst)
    if mode == "local":
        calib = accounting.Plan(steps=len(worst), sampling="none", scales=scales)
    else:
        calib = accounting.Plan(steps=len(worst) * plan.local_steps, sampling="poisson",
                                sampling_rate=plan.record_rate, scales=scales)
    plan.z = accounting.calibrate_plan(privacy.epsilon, privacy.delta, calib,
                                       privacy.neighbouring)
    if plan.participation_cap < train.rounds:
        plan.notes.append(f"each client takes part in at most {plan.participation_cap} rounds "
                          "(the plan the noise is calibrated for); later draws sit out")
    return plan


def round_factors(schedule: list[float], rounds: int) -> list[float]:
    """Each round's noise factor: the schedule's equal spans over the rounds (1 when empty).

    Args:
        schedule: privacy.noise_schedule's factors; rounds: the run's rounds.
    """
    if not schedule:
        return [1.0] * rounds
    return [float(schedule[min(len(schedule) - 1, r * len(schedule) // rounds)])
            for r in range(rounds)]

