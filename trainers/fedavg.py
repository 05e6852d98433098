"""The federated loop: client sampling, vectorised local training, server aggregation, one ledger.

Non-private FedAvg, client-level DP-FedAvg with central noise (McMahan et al. 2018) or local noise,
and example-level DP-SGD inside the clients (trainers/dpsgd.py) all run here; `privacy_plan`
calibrates the noise for the whole plan and turns each executed round into DP events in the
privacy ledger, from which the Claim is built. Every round the server screens the received updates
(trainers/screening.py), a monitor watches the global model on public data and rolls back a bad
round (trainers/monitor.py), and, given a work folder, a checkpoint is written so that a crashed
run resumes to the same weights (trainers/checkpoint.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from privbench import accounting
from privbench.data import SplitData
from privbench.ledger import PrivacyLedger
from privbench.monitor import RecordHook
from privbench.partition import ClientShard
from privbench.spec import PrivacySpec, SecAggSpec, TrainSpec
from privbench.trained import Observations, TrainedModel
from privbench.trainers.adaptive_clip import next_clip
from privbench.trainers.aggregation import (
    clip_updates,
    dp_fedavg,
    fedavg_mean,
    gaussian_like,
    update_norms,
)
from privbench.trainers.checkpoint import RoundCheckpoint
from privbench.trainers.client_update import local_sgd
from privbench.trainers.dpsgd import GradientCanaries, dp_sgd
from privbench.trainers.monitor import RoundMonitor
from privbench.trainers.privacy_plan import PUBLIC as CENTRAL_DP_OBSERVERS
from privbench.trainers.privacy_plan import PrivacyPlan, make_plan
from privbench.trainers.screening import screen_updates
from privbench.trainers.secagg.trainer_hook import SecureRounds

RoundCallback = Callable[[int, int], None]  # (round finished, rounds planned)
# (round, client ids, the updates they honestly send (K, ...)) -> {row: update sent instead}
TamperHook = Callable[[int, list[int], dict[str, torch.Tensor]], dict[int, Any]]
LEDGER_FILE = "ledger.jsonl"
log = logging.getLogger("privbench.trainers")
__all__ = ["CENTRAL_DP_OBSERVERS", "pad_shards", "train_fedavg"]
# Optional audit hook (privbench.audit.canaries): (round index, sampled client ids, updates) ->
# updates. It may replace canary clients' updates before clipping and noise; None changes nothing.
# A hook may also have a method `canary_mask(sampled) -> (K,) bool tensor` marking the sampled
# clients whose updates it replaces: those clients are then not trained, and their rows reach the
# hook as zeros. A hook without it gets every sampled client's trained update.
ClientUpdateHook = Callable[[int, torch.Tensor, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
# Monitoring hook (privbench.monitor.RecordHook): called with each round's history record and the
# DP event the round executed (None without DP) as soon as the round ends; it may add keys to the
# record (the monitor adds the epsilon spent and planned), which stay in the history. Before the
# first round it is handed the rounds a resumed checkpoint holds.
RecordCallback = RecordHook



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


def generators(seed: int) -> dict[str, torch.Generator]:
    """Separate random streams, so that across cells of a sweep the same clients are sampled each
    round and only the noise differs."""
    names = ("sampling", "local", "noise", "dropout", "clip")
    return {n: torch.Generator().manual_seed(seed * 1_000_003 + i + 1)
            for i, n in enumerate(names)}


def sample_cohort(train: TrainSpec, n_clients: int, r: int, seed: int,
                  gen: torch.Generator) -> torch.Tensor:
    """Round r's cohort: Poisson, a fixed-size uniform draw, or the next slice of a shuffle."""
    if train.sampling == "poisson":
        return torch.nonzero(torch.rand(n_clients, generator=gen) < train.cohort / n_clients
                             ).flatten()
    m = int(train.cohort)
    if train.sampling == "fixed_cohort":
        return torch.randperm(n_clients, generator=gen)[:m].sort().values
    per_epoch = max(1, n_clients // m)
    epoch, slot = divmod(r, per_epoch)
    perm = torch.randperm(n_clients, generator=torch.Generator().manual_seed(
        seed * 7919 + epoch))
    return perm[slot * m:(slot + 1) * m].sort().values


def train_fedavg(model: nn.Module, data: SplitData, shards: list[ClientShard], train: TrainSpec,
                 privacy: PrivacySpec, seed: int, on_round: RoundCallback | None = None, *,
                 work_dir: Path | None = None, tamper: TamperHook | None = None,
                 secagg: SecAggSpec | None = None,
                 client_update_hook: ClientUpdateHook | None = None,
                 on_record: RecordCallback | None = None,
                 record_rounds: Collection[int] = (),
                 gradient_canaries: GradientCanaries | None = None) -> TrainedModel:
    """Train `model` federatedly on `shards` of `data` and return it with its Claim.

    For each round in `record_rounds` (1-based) the observations keep what the server holds: the
    round's starting model, every received client update (not under secure aggregation) and the
    aggregated sum.

    `work_dir` holds the ledger and round checkpoints (resumed from when present); `tamper` lets a
    test play malicious clients by replacing what chosen clients send. `gradient_canaries` are
    the audit's Dirac records inside example-level DP-SGD (rows: clients).
    """
    n_clients = len(shards)
    xs, ys, counts = pad_shards(data.x_train, data.y_train, shards)
    plan = make_plan(train, privacy, n_clients, mean_shard=float(counts.float().mean()))
    gens = generators(seed)
    ledger = PrivacyLedger(work_dir / LEDGER_FILE if work_dir else None, privacy.delta,
                           privacy.neighbouring)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    monitor = RoundMonitor(model, torch.from_numpy(data.x_pop).float(),
                           torch.from_numpy(data.y_pop).long(), train.max_accuracy_drop)
    # [secagg] hook: route the cohort's clipped updates through secure aggregation.
    secure = (SecureRounds(secagg, privacy, train, plan.update_noise_multiplier(0), params, seed)
              if secagg is not None and secagg.enabled else None)
    iterates: list[dict[str, torch.Tensor]] = []
    history: list[dict[str, Any]] = []
    clip = privacy.clip
    start_round, stopped = 0, None
    checkpoint = RoundCheckpoint(work_dir) if work_dir else None
    resumed = checkpoint.load(gens) if checkpoint else None
    if resumed is not None:  # keep the model's parameter order: noise is drawn in that order
        state = resumed.state
        params = {name: resumed.params[name] for name in params}
        iterates = [{name: it[name] for name in params} for it in resumed.iterates]
        start_round, history, clip = state["round"], resumed.history, state["clip"]
        stopped = state.get("stopped")
        monitor.best_accuracy, monitor.good_round = state["best_accuracy"], state["round"]
    # the ledger continues from the checkpoint's round (rounds after it run again, alike)
    ledger.truncate(resumed.state["ledger_bytes"] if resumed is not None else 0)
    if on_record is not None:
        rows = [h for h in history if "stopped" not in h]
        on_record.restart(rows, ledger.round_events() if plan.private else [None] * len(rows))
    monitor.good = {n: p.clone() for n, p in params.items()}

    recorded: dict[str, dict] = {"round_params": {}, "client_updates": {}, "aggregates": {},
                                 "cohorts": {}}
    for r in range(start_round, train.rounds):
        if stopped is not None:
            break
        sampled = sample_cohort(train, n_clients, r, seed, gens["sampling"])
        record: dict[str, Any] = {"round": r + 1, "cohort": int(sampled.numel())}
        if train.dropout > 0 and sampled.numel():
            stay = torch.rand(sampled.numel(), generator=gens["dropout"]) >= train.dropout
            record["dropped_out"] = int((~stay).sum())
            sampled = sampled[stay]
        if plan.per_client:
            done = ledger.participations()
            capped = [int(c) for c in sampled if done.get(int(c), 0) >= plan.participation_cap]
            if capped:
                record["sat_out_at_cap"] = capped
                sampled = torch.tensor([int(c) for c in sampled if int(c) not in capped],
                                       dtype=torch.long)
        stopped = _budget_check(plan, ledger, r, sampled, privacy.max_epsilon)
        if stopped is not None:
            log.warning(stopped)
            history.append({"round": r + 1, "stopped": stopped})
            break
        clients = [int(c) for c in sampled]
        view: dict[str, Any] | None = {} if r + 1 in record_rounds else None
        start_params = params
        step, clip_next = _one_round(model, plan, params, xs, ys, counts, sampled, clients, train,
                                     clip, gens, r, record, tamper,
                                     secure, client_update_hook, view, gradient_canaries)
        if view is not None:  # hook for the inversion attacks (attacks.inversion.rounds)
            _record_round(recorded, r + 1, start_params, view, secure is None)
        if step is not None:
            params = {name: params[name] + train.server_lr * step[name] for name in params}
        params, rollback = monitor.check(r + 1, params)
        if rollback is not None:
            record["rollback"] = rollback
            log.warning("round %d rolled back to round %d: %s", r + 1,
                        rollback["rolled_back_to"], rollback["reason"])
        round_event = plan.run_event(r, len(clients)) if plan.private else None
        if round_event is not None:
            ledger.record_round(r + 1, round_event, clients, plan.client_event(r), clip=clip)
        clip = clip_next
        iterates.append({name: p.clone() for name, p in params.items()})
        history.append(record)
        if on_record is not None:
            on_record(record, round_event)
        if checkpoint is not None:
            checkpoint.save(params=params, iterates=iterates, history=history, generators=gens,
                            state={"round": r + 1, "clip": clip, "stopped": stopped,
                                   "best_accuracy": monitor.best_accuracy,
                                   "ledger_bytes": ledger.size})
        if on_round is not None:
            on_round(r + 1, train.rounds)

    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    rounds_run = sum(1 for h in history if "stopped" not in h)
    claim = plan.claim(ledger, rounds_run, privacy.clip)
    if stopped is not None:
        claim.notes.append(stopped)
    if secure is not None:  # [secagg] distributed DP: accounted from the realised noise
        claim = secure.claim(claim)
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
    if recorded["aggregates"]:
        observations.exposed["aggregates"] = "the server"
    if secure is not None:  # [secagg] no client_updates surface; the server sees aggregates
        observations.exposed.pop("client_updates", None)
        observations.exposed.update(secure.exposed())
    return TrainedModel(model=model, claim=claim, observations=observations, history=history)


def _budget_check(plan: PrivacyPlan, ledger: PrivacyLedger, r: int, sampled: torch.Tensor,
                  max_epsilon: float) -> str | None:
    """A message when round r would take the ledger past `max_epsilon`, else None."""
    if not plan.private or math.isinf(max_epsilon):
        return None
    if plan.mode == "central":
        planned = int(plan.cohort) if plan.sampling == "fixed_cohort" else 0
        exceeds = ledger.would_exceed(plan.run_event(r, planned), max_epsilon)
    else:
        exceeds = any(_client_would_exceed(ledger, plan, int(c), r, max_epsilon)
                      for c in _distinct_histories(ledger, sampled))
    if not exceeds:
        return None
    return (f"stopped before round {r + 1}: it would take epsilon past privacy.max_epsilon = "
            f"{max_epsilon:g}; the model and Claim are those of round {r}")


def _distinct_histories(ledger: PrivacyLedger, sampled: torch.Tensor) -> list[int]:
    """One client per distinct participation history among `sampled` (they account alike)."""
    seen, out = set(), []
    for c in sampled.tolist():
        key = repr(ledger.client_events(c))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _client_would_exceed(ledger: PrivacyLedger, plan: PrivacyPlan, client: int, r: int,
                         max_epsilon: float) -> bool:
    event = accounting.compose_steps([*ledger.client_events(client), plan.client_event(r)])
    return accounting.epsilon_with_fallback(event, ledger.delta, ledger.neighbouring)[0] \
        > max_epsilon


def _one_round(model: nn.Module, plan: PrivacyPlan, params: dict[str, torch.Tensor],
               xs: torch.Tensor, ys: torch.Tensor, counts: torch.Tensor, sampled: torch.Tensor,
               clients: list[int], train: TrainSpec, clip: float,
               gens: dict[str, torch.Generator], r: int, record: dict[str, Any],
               tamper: TamperHook | None, secure: SecureRounds | None = None,
               client_update_hook: ClientUpdateHook | None = None,
               view: dict[str, Any] | None = None,
               gradient_canaries: GradientCanaries | None = None,
               ) -> tuple[dict[str, torch.Tensor] | None, float]:
    """Train the cohort, screen and aggregate; returns (server step or None, next round's clip)."""
    privacy = plan.privacy
    sent = None
    if sampled.numel() > 0:
        if plan.mode == "example":
            sent = dp_sgd(model, params, xs[sampled], ys[sampled], counts[sampled],
                          steps=plan.local_steps, sampling_rate=plan.record_rate,
                          expected_batch=train.batch_size, lr=train.lr, clip=clip,
                          noise_multiplier=plan.update_noise_multiplier(r),
                          generator=gens["local"], noise_generator=gens["noise"],
                          canaries=None if gradient_canaries is None
                          else gradient_canaries.rows(sampled))
        else:
            sent, losses = _train_clients(model, params, xs, ys, counts, sampled, train, gens,
                                          client_update_hook)
            if not plan.private and losses.numel():
                record["client_loss"] = float(losses.mean())
            if client_update_hook is not None:  # audit canaries (see ClientUpdateHook)
                sent = client_update_hook(r, sampled, sent)
            if plan.mode == "local":  # each client clips and noises before sending
                clipped, _ = clip_updates(sent, clip)
                noise = gaussian_like(clipped, plan.update_noise_multiplier(r) * clip,
                                      gens["noise"])
                sent = {n: clipped[n] + noise[n] for n in clipped}
    received = None
    if sent is not None:
        replaced = tamper(r + 1, clients, sent) if tamper is not None else None
        received, kept, rejections = screen_updates(sent, clients, params,
                                                 max_norm=train.max_update_norm,
                                                 round_no=r + 1, replaced=replaced)
        if rejections:
            record["rejected"] = rejections
    if plan.mode == "central":
        clipped, norms = (clip_updates(received, clip) if received is not None
                          else (None, torch.zeros(0)))
        z = plan.update_noise_multiplier(r)
        if secure is not None:  # [secagg] the server receives only the secure sum
            clipped, z = secure.sum_round(clipped, r, record)
        step, _ = dp_fedavg(clipped, params, clip=clip, noise_multiplier=z,
                            expected_cohort=train.cohort, generator=gens["noise"])
        if view is not None:  # the server holds the clipped updates (or only their secure
            # sum), and that sum before it adds its own noise
            view.update(clients=[clients[k] for k in kept] if received is not None else [],
                        seen=clipped if secure is None else None,
                        total=None if clipped is None else {n: u.sum(dim=0)
                                                            for n, u in clipped.items()})
        if privacy.adaptive_clip:
            new_clip, fraction = next_clip(clip, norms, target_quantile=privacy.target_quantile,
                                           lr=privacy.clip_lr,
                                           count_noise_multiplier=privacy.count_noise_multiplier,
                                           expected_cohort=train.cohort, generator=gens["clip"])
            record["clip"], record["noised_fraction_under_clip"] = clip, fraction
            return step, new_clip
        return step, clip
    if received is None:
        return None, clip
    if view is not None:  # local DP / example level: the server holds the noised updates
        view.update(clients=[clients[k] for k in kept], seen=received,
                    total={n: u.sum(dim=0) for n, u in received.items()})
    if not plan.private:
        record["update_norm"] = float(update_norms(received).mean())
    if secure is not None:  # [secagg] the mean via the secure sum (needs the clipping bound)
        return secure.mean_round(clip_updates(received, clip)[0], r, record), clip
    return fedavg_mean(received), clip


def _train_clients(model: nn.Module, params: dict[str, torch.Tensor], xs: torch.Tensor,
                   ys: torch.Tensor, counts: torch.Tensor, sampled: torch.Tensor,
                   train: TrainSpec, gens: dict[str, torch.Generator],
                   hook: ClientUpdateHook | None,
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Local SGD on the sampled clients whose updates the hook keeps; returns the updates
    (K, ...), zero in the rows of clients the hook replaces, and the trained clients' losses."""
    mask_of = getattr(hook, "canary_mask", None)
    replaced = mask_of(sampled) if mask_of is not None else None
    if replaced is None or not bool(replaced.any()):
        return local_sgd(model, params, xs[sampled], ys[sampled], counts[sampled],
                         epochs=train.local_epochs, batch_size=train.batch_size, lr=train.lr,
                         generator=gens["local"])
    sent = {name: torch.zeros((sampled.numel(), *p.shape), dtype=p.dtype)
            for name, p in params.items()}
    real = sampled[~replaced]
    if real.numel() == 0:
        return sent, torch.zeros(0)
    trained, losses = local_sgd(model, params, xs[real], ys[real], counts[real],
                                epochs=train.local_epochs, batch_size=train.batch_size,
                                lr=train.lr, generator=gens["local"])
    for name, u in trained.items():
        sent[name][~replaced] = u
    return sent, losses


def _record_round(recorded: dict[str, dict], round_no: int, params: dict[str, torch.Tensor],
                  view: dict[str, Any], per_client: bool) -> None:
    """Keep one round's starting model, the per-client updates as the server received them
    (client id -> update; only without secure aggregation), the sum it aggregated (before any
    noise the server itself adds) and which clients that sum holds."""
    recorded["round_params"][round_no] = {name: p.clone() for name, p in params.items()}
    seen = view.get("seen")
    if per_client and seen is not None:
        recorded["client_updates"][round_no] = {
            c: {name: u[i].clone() for name, u in seen.items()}
            for i, c in enumerate(view["clients"])}
    if view.get("total") is not None:
        recorded["aggregates"][round_no] = {name: t.clone() for name, t in view["total"].items()}
        recorded["cohorts"][round_no] = list(view["clients"])
