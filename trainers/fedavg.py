"""The federated loop: Poisson client sampling, vectorised local SGD, FedAvg or DP-FedAvg.

With a finite target epsilon this is client-level DP-FedAvg (McMahan et al. 2018): each sampled
client's update is clipped to norm C, the server adds N(0, (z C)^2) to the sum and divides by the
expected cohort. z is calibrated with dp_accounting (PLD) for the planned rounds, and the Claim is
accounted from the rounds that actually ran.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import torch
from torch import nn

from privbench.accounting import calibrate_noise_multiplier
from privbench.claim import claim_for_poisson_gaussian
from privbench.data import SplitData
from privbench.partition import ClientShard
from privbench.spec import PrivacySpec, TrainSpec
from privbench.trained import Observations, TrainedModel
from privbench.trainers.aggregation import clip_updates, dp_fedavg, fedavg_mean, update_norms
from privbench.trainers.client_update import local_sgd

RoundCallback = Callable[[int, int], None]  # (round finished, rounds planned)

CENTRAL_DP_OBSERVERS = [
    "anyone querying the released model (final_model)",
    "anyone holding the released weights (final_weights)",
    "anyone who sees every round's global model (iterates)",
]


def pad_shards(x: np.ndarray, y: np.ndarray,
               shards: list[ClientShard]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack client shards into padded tensors (clients, n_max, ...) plus the record counts."""
    counts = torch.tensor([len(s.indices) for s in shards])
    n_max = int(counts.max())
    xs = torch.zeros((len(shards), n_max, *x.shape[1:]), dtype=torch.float32)
    ys = torch.zeros((len(shards), n_max), dtype=torch.long)
    for i, s in enumerate(shards):
        xs[i, : len(s.indices)] = torch.from_numpy(x[s.indices])
        ys[i, : len(s.indices)] = torch.from_numpy(y[s.indices])
    return xs, ys, counts


def train_fedavg(model: nn.Module, data: SplitData, shards: list[ClientShard], train: TrainSpec,
                 privacy: PrivacySpec, seed: int,
                 on_round: RoundCallback | None = None,
                 record_rounds: Collection[int] = ()) -> TrainedModel:
    """Train `model` federatedly on `shards` of `data` and return it with its Claim.

    For each round in `record_rounds` (1-based) the observations keep what the server holds:
    the round's starting model, every sampled client's update and the aggregated sum.
    """
    n_clients = len(shards)
    sampling_rate = train.cohort / n_clients
    private = math.isfinite(privacy.epsilon)
    z = (calibrate_noise_multiplier(privacy.epsilon, privacy.delta, sampling_rate, train.rounds,
                                    privacy.neighbouring) if private else 0.0)
    # Separate streams so that, across cells of a sweep, the same clients are sampled each round
    # and only the noise differs.
    sampling_gen = torch.Generator().manual_seed(seed * 1_000_003 + 1)
    local_gen = torch.Generator().manual_seed(seed * 1_000_003 + 2)
    noise_gen = torch.Generator().manual_seed(seed * 1_000_003 + 3)

    xs, ys, counts = pad_shards(data.x_train, data.y_train, shards)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    iterates: list[dict[str, torch.Tensor]] = []
    history: list[dict[str, Any]] = []
    recorded: dict[str, dict] = {"round_params": {}, "client_updates": {}, "aggregates": {}}
    rounds_run = 0
    for r in range(train.rounds):
        sampled = torch.nonzero(torch.rand(n_clients, generator=sampling_gen) < sampling_rate)
        sampled = sampled.flatten()
        record: dict[str, Any] = {"round": r + 1, "cohort": int(sampled.numel())}
        updates = None
        if sampled.numel() > 0:
            updates, losses = local_sgd(
                model, params, xs[sampled], ys[sampled], counts[sampled],
                epochs=train.local_epochs, batch_size=train.batch_size, lr=train.lr,
                generator=local_gen,
            )
            record["client_loss"] = float(losses.mean())
        seen, total = updates, None
        if private:
            clipped, norms = (clip_updates(updates, privacy.clip) if updates is not None
                              else (None, torch.zeros(0)))
            step, total = dp_fedavg(clipped, params, clip=privacy.clip, noise_multiplier=z,
                                    expected_cohort=train.cohort, generator=noise_gen)
            seen = clipped
            if norms.numel():
                record["update_norm"] = float(norms.mean())
                record["clipped_fraction"] = float((norms > privacy.clip).float().mean())
        elif updates is not None:
            step = fedavg_mean(updates)
            record["update_norm"] = float(update_norms(updates).mean())
        else:
            step = None
        if r + 1 in record_rounds:  # hook for the inversion attacks (attacks.inversion.rounds)
            _record_round(recorded, r + 1, params, sampled, seen, total)
        if step is not None:
            params = {name: params[name] + train.server_lr * step[name] for name in params}
        iterates.append({name: p.clone() for name, p in params.items()})
        history.append(record)
        rounds_run += 1
        if on_round is not None:
            on_round(r + 1, train.rounds)

    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    claim = claim_for_poisson_gaussian(
        noise_multiplier=z, sampling_rate=sampling_rate, steps=rounds_run, delta=privacy.delta,
        target_epsilon=privacy.epsilon, clip=privacy.clip, unit="client",
        neighbouring=privacy.neighbouring, guarantee_against=CENTRAL_DP_OBSERVERS,
    )
    observations = Observations(
        final_params={name: p.clone() for name, p in params.items()},
        iterates=iterates,
        exposed={
            "final_model": "anyone querying the released model",
            "iterates": "the server and anyone it shares round models with",
        },
        **recorded,
    )
    if recorded["client_updates"]:
        observations.exposed["client_updates"] = "the server (no secure aggregation)"
        observations.exposed["aggregates"] = "the server"
    return TrainedModel(model=model, claim=claim, observations=observations, history=history)


def _record_round(recorded: dict[str, dict], round_no: int, params: dict[str, torch.Tensor],
                  sampled: torch.Tensor, seen: dict[str, torch.Tensor] | None,
                  total: dict[str, torch.Tensor] | None) -> None:
    """Keep one round's starting model, per-client updates (client id -> update) and their sum
    (the noised sum under central DP), as the server receives them."""
    recorded["round_params"][round_no] = {name: p.clone() for name, p in params.items()}
    recorded["client_updates"][round_no] = {
        int(c): {name: u[i].clone() for name, u in seen.items()}
        for i, c in enumerate(sampled.tolist())} if seen is not None else {}
    if total is None and seen is not None:
        total = {name: u.sum(dim=0) for name, u in seen.items()}
    if total is not None:
        recorded["aggregates"][round_no] = {name: t.clone() for name, t in total.items()}
