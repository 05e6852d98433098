"""Canaries planted in a training run with random inclusion bits.

A canary is included with probability 1/2, independently. An included input-space or update-space
canary becomes a client of its own, so including it is the add/remove-one-client change that a
client-level claim bounds (a canary hidden inside an existing client would be a replace-one change,
which that claim does not state). Three kinds:
- input-space records (mislabelled population records, or out-of-distribution noise with a random
  label) for the `final_model` surface, scored by their loss;
- Dirac gradient canaries for example-level training (privbench.audit.gradient_canaries): records
  whose gradient is fixed, on coordinates chosen blind to the bits, each held by a random real
  client (adding one is the add/remove-one-record change an example-level claim bounds), so
  they enter DP-SGD's (or, without DP, local SGD's) minibatches like that client's records;
- update-space canaries (a fixed random unit vector times `canary_norm * clip`, the m vectors
  orthonormal): the canary client's
  update is replaced by that vector through the trainer's `client_update_hook`, before clipping and
  noise, so it passes through the DP mechanism like any client. Scored by cosines with the model
  delta (`final_weights`, as in Andrew et al. 2024) or by their likelihood ratio over each round's
update (`iterates`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from privbench.audit.design import auto_design
from privbench.audit.gradient_canaries import (
    plant_dirac_canaries,
    quiet_adapter_coordinates,
    quiet_coordinates,
)
from privbench.audit.update_canaries import CanaryUpdateHook, orthonormal_directions
from privbench.data.partition import ClientShard
from privbench.data.splits import SplitData
from privbench.errors import PrivbenchError
from privbench.models.adapter import Batch, Params
from privbench.spec.attack_schema import AuditSpec
from privbench.spec.schema import CellSpec, TrainSpec
from privbench.trainers.dpsgd import GradientCanaries


@dataclass(frozen=True)
class CanarySet:
    """The planted canaries: inclusion bits, and for included ones the client that holds them."""

    kind: str
    bits: np.ndarray  # (m,) bool: True = trained on
    client_ids: np.ndarray  # (m,) shard id of each included canary's client, -1 if excluded
    x: np.ndarray | None = None  # (m, features) input-space canary records
    y: np.ndarray | None = None  # (m,) their labels
    vectors: np.ndarray | None = None  # (m, d) unit vectors of update-space canaries
    coords: np.ndarray | None = None  # (m,) flat parameter coordinate of each Dirac canary
    norm: float = 0.0  # update or gradient canary norm (canary_norm * clip)

    @property
    def m(self) -> int:
        return len(self.bits)


@dataclass
class PlantedRun:
    """What a cell trains on once canaries are planted, and the hook the trainer calls."""

    data: SplitData
    shards: list[ClientShard]
    canaries: CanarySet
    train: TrainSpec  # the cell's plan, with the cohort that keeps real clients' sampling rate
    client_update_hook: CanaryUpdateHook | None = None
    gradient_canaries: GradientCanaries | None = None


def plants_canaries(spec: CellSpec) -> bool:
    """Whether a cell's training run carries the audit's canaries: one-run and one-shot audits
    do; a multi-run audit trains runs of its own."""
    a = spec.audit
    return a.enabled and a.mode != "multi-run"


def canary_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0xCA9A])


def input_canaries(kind: str, data: SplitData, m: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """m canary records: mislabelled population records, or uniform noise ("ood")."""
    if kind == "mislabelled":
        if m > len(data.y_pop):
            raise PrivbenchError(f"audit.n_canaries = {m}: only {len(data.y_pop)} population "
                                 "records to mislabel; lower it or use audit.canary = 'ood'")
        idx = rng.choice(len(data.y_pop), size=m, replace=False)
        shift = rng.integers(1, data.n_classes, size=m)  # never the true label
        return data.x_pop[idx].copy(), (data.y_pop[idx] + shift) % data.n_classes
    lo, hi = data.x_train.min(axis=0), data.x_train.max(axis=0)
    x = rng.uniform(lo, hi, size=(m, data.n_features)).astype(np.float32)
    return x, rng.integers(0, data.n_classes, size=m)


def audited_cohort(cohort: float, n_clients: int, m: int) -> float:
    """The expected cohort of a run with m canary clients planted: scaled so that each real client
    keeps its sampling rate when the m / 2 canaries expected are included. The run's rate is this
    cohort over the real clients and the canaries the bits include (a few percent off when they
    are not m / 2), and its noise is calibrated to that rate, so the claim keeps its target. It
    uses the m / 2 expected, not the bits, so a score that reads it stays blind to them."""
    return cohort * (n_clients + m / 2) / n_clients


def plant_audit_canaries(cell: CellSpec, data: SplitData, shards: list[ClientShard],
                   model: nn.Module) -> PlantedRun:
    """Draw canaries and inclusion bits; add one client per included canary, with the expected
    cohort scaled to keep the real clients' sampling rate (Dirac canaries are records of the one
    client instead)."""
    spec, clip = auto_design(cell, data, model), cell.privacy.clip
    m = spec.n_canaries
    rng, bits = draw_bits(cell.seed, m)
    if spec.canary == "dirac":
        coords = quiet_coordinates(model, data.x_pop, data.y_pop, m, rng)
        canaries, gradient = _dirac(spec, bits, coords, clip, len(shards), rng)
        return PlantedRun(data, list(shards), canaries, cell.train, gradient_canaries=gradient)
    client_ids, train = _canary_clients(cell.train, bits, len(shards))
    if spec.canary in ("mislabelled", "ood"):
        x, y = input_canaries(spec.canary, data, m, rng)
        n = len(data.y_train)
        with_canaries = dataclasses.replace(
            data, x_train=np.concatenate([data.x_train, x[bits]]),
            y_train=np.concatenate([data.y_train, y[bits]]))
        new = [ClientShard(int(cid), np.array([n + i])) for i, cid in enumerate(client_ids[bits])]
        canaries = CanarySet(spec.canary, bits, client_ids, x=x, y=y)
        return PlantedRun(with_canaries, list(shards) + new, canaries, train)
    canaries = _random_unit(spec, bits, client_ids, rng, sum(p.numel() for p in
                                                            model.parameters()), clip)
    # The canary client holds one ordinary record; its trained update is replaced by the hook.
    new = [ClientShard(int(cid), np.array([0])) for cid in client_ids[bits]]
    return PlantedRun(data, list(shards) + new, canaries, train, CanaryUpdateHook(canaries))


def plant_canary_clients(cell: CellSpec, n_clients: int, dim: int
                         ) -> tuple[CanarySet, TrainSpec, CanaryUpdateHook]:
    """Random-unit canary clients for any model (a language model's adapter among them): the
    same draws, client ids, cohort and hook as `plant_audit_canaries` gives a classifier.

    Args:
        cell: the cell's spec (audit.canary = "random-unit"; audit.design "manual").
        n_clients: the real clients; included canaries become clients n_clients, n_clients+1...
        dim: the number of trainable parameters (the canary directions' dimension, in the
            order of the trainer's update dict).

    Returns:
        The canaries, the train plan with the audited cohort, and the trainer's update hook.
    """
    rng, bits = draw_bits(cell.seed, cell.audit.n_canaries)
    client_ids, train = _canary_clients(cell.train, bits, n_clients)
    canaries = _random_unit(cell.audit, bits, client_ids, rng, dim, cell.privacy.clip)
    return canaries, train, CanaryUpdateHook(canaries)


def plants_dirac(spec: CellSpec) -> bool:
    """Whether a cell's training carries Dirac gradient canaries (a one-run audit: DP-SGD's
    records, or local SGD's without DP)."""
    return plants_canaries(spec) and spec.audit.canary == "dirac"


def plant_adapter_dirac_canaries(cell: CellSpec, adapter: Any, public: Batch | None,
                                 records: Batch | None, n_clients: int
                                 ) -> tuple[CanarySet, GradientCanaries]:
    """Dirac canaries for any model adapter (a language model's LoRA or full parameters): the
    same bits and norm as `plant_audit_canaries` draws, on the trainable coordinates public text
    and the training records move least (`quiet_adapter_coordinates`); each canary a record of
    a random client.

    Args:
        cell: the cell's spec (audit.canary = "dirac", example level).
        adapter: the model adapter the trainer trains.
        public, records: a public batch and the training records (flat; either may be None)
            the coordinates are chosen on, never the canaries' bits.
        n_clients: the real clients (1: centralised DP-SGD).

    Returns:
        The canaries and the trainer's view of them.
    """
    rng, bits = draw_bits(cell.seed, cell.audit.n_canaries)
    coords = quiet_adapter_coordinates(adapter, public, records, len(bits), rng)
    return _dirac(cell.audit, bits, coords, cell.privacy.clip, n_clients, rng)


def draw_bits(seed: int, m: int) -> tuple[np.random.Generator, np.ndarray]:
    """The canaries' generator and their Bernoulli(1/2) inclusion bits, its first draw (every
    design then draws its canaries from the same generator)."""
    rng = canary_rng(seed)
    return rng, rng.random(m) < 0.5


def _dirac(audit: AuditSpec, bits: np.ndarray, coords: np.ndarray, clip: float,
           n_clients: int, rng: np.random.Generator) -> tuple[CanarySet, GradientCanaries]:
    """Dirac canaries of norm audit.canary_norm * clip on `coords`, each a record of a client
    drawn uniformly (the one client of centralised DP-SGD; no draw then), drawn for every
    canary so the owners do not depend on the bits."""
    norm = audit.canary_norm * clip
    owners = (np.zeros(len(bits), np.int64) if n_clients == 1
              else rng.integers(0, n_clients, size=len(bits)))
    canaries = CanarySet("dirac", bits, np.where(bits, owners, -1), coords=coords, norm=norm)
    return canaries, plant_dirac_canaries(bits, coords, norm, owners, n_clients)


def _canary_clients(train: TrainSpec, bits: np.ndarray, n_real: int
                    ) -> tuple[np.ndarray, TrainSpec]:
    """Client ids of the included canaries (after the real clients; -1 when left out) and the
    train plan whose expected cohort keeps each real client's sampling rate."""
    client_ids = np.full(len(bits), -1, dtype=np.int64)
    client_ids[bits] = n_real + np.arange(int(bits.sum()))
    n_total = n_real + int(bits.sum())
    return client_ids, train.model_copy(update={"cohort": min(
        audited_cohort(train.cohort, n_real, len(bits)), float(n_total))})


def _random_unit(audit: AuditSpec, bits: np.ndarray, client_ids: np.ndarray,
                 rng: np.random.Generator, dim: int, clip: float) -> CanarySet:
    """Canary update directions: orthonormal, of norm audit.canary_norm * clip."""
    vectors = orthonormal_directions(rng, len(bits), dim)
    return CanarySet(audit.canary, bits, client_ids, vectors=vectors,
                     norm=audit.canary_norm * clip)


def flatten(params: Params) -> np.ndarray:
    """All parameters as one float64 vector, in the models' parameter order."""
    return flatten_all([params])[0]


def flatten_all(snapshots: list[Params]) -> np.ndarray:
    """`flatten` of every snapshot, stacked: (snapshots, parameters) float64, the same values
    (each tensor stacked over the snapshots at once, not each snapshot flattened apart)."""
    count = len(snapshots)
    return torch.cat([torch.stack([s[name].detach() for s in snapshots]).reshape(count, -1)
                      for name in snapshots[0]], dim=1).double().numpy()


def final_delta_cosines(vectors: np.ndarray, initial: Params, final: Params) -> np.ndarray:
    """cos(c_j, final - initial) for each canary direction c_j (unit rows)."""
    delta = flatten(final) - flatten(initial)
    return vectors @ delta / max(float(np.linalg.norm(delta)), 1e-300)


def round_likelihood_scores(vectors: np.ndarray, initial: Params, iterates: list[Params],
                            signal: float, sampling_rate: float) -> np.ndarray:
    """Per-canary log-likelihood ratio of "sampled with probability q each round" vs "absent".

    In round t, the step theta_t - theta_{t-1} restricted to parameter tensor b is, without the
    canary, taken as N(0, v_bt I) with v_bt = ||step_bt||^2 / d_b (estimated blind to the bits,
    per tensor, so noise that differs between layers is seen); a round that samples canary j adds
    `signal` * c_j (signal = server_lr * clip / expected cohort for a canary clipped to the bound).
    The score sum_t log(1 - q + q exp(sum_b (signal <c_jb, step_bt> - signal^2 ||c_jb||^2 / 2)
    / v_bt)) is the Neyman-Pearson statistic of one canary under Poisson-subsampled Gaussian
    rounds: the strongest white-box score of DP-FedAvg's iterates.
    """
    thetas = flatten_all([initial, *iterates])
    steps = np.diff(thetas, axis=0)  # (rounds, d)
    log_lr = np.zeros((len(vectors), len(steps)))
    start = 0
    for p in initial.values():
        block = slice(start, start + p.numel())
        start += p.numel()
        step_b, c_b = steps[:, block], vectors[:, block]
        var = np.maximum((step_b**2).mean(axis=1), 1e-300)  # (rounds,)
        shift = signal * (c_b @ step_b.T) - 0.5 * signal**2 * (c_b**2).sum(axis=1)[:, None]
        log_lr += shift / var
    q = min(max(sampling_rate, 1e-12), 1.0)
    return np.logaddexp(np.log1p(-q) if q < 1 else -np.inf, math.log(q) + log_lr).sum(axis=1)
