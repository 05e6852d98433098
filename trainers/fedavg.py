"""The federated loop: client sampling, vectorised local training, server aggregation, one ledger.

Non-private FedAvg, client-level DP-FedAvg with central noise (McMahan et al. 2018) or local noise,
distributed DP under secure aggregation, and example-level DP-SGD inside the clients
(trainers/dpsgd.py) all run here, each as the plan's registered mechanism (trainers/mechanisms/:
the clients' side and the server's aggregation of a round; this loop only samples, carries and
screens); `privacy_plan` calibrates the noise for the whole plan and turns each executed round
into DP events in the privacy ledger, from which the Claim is built. Every round the server
screens the received updates (trainers/screening.py), a monitor watches the global model on
public data and rolls back a bad round (trainers/monitor.py), and, given a work folder, a
checkpoint is written so that a crashed run resumes to the same weights (trainers/checkpoint.py).

The loop is the same for every model: it sees a `ModelAdapter` (privbench/models/adapter.py) and
client data as one padded Batch dict (trainers/client_data.py), so a tabular MLP, a CNN and a
Hugging Face language model with LoRA get every capability above alike.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from privbench.data.partition import ClientShard
from privbench.data.splits import SplitData
from privbench.models.adapter import Batch, ClassifierAdapter, ModelAdapter
from privbench.privacy.budget_monitor import RecordHook
from privbench.privacy.ledger import PrivacyLedger
from privbench.rng import rng_streams
from privbench.run.observations import Observations, TrainedModel
from privbench.spec.schema import PrivacySpec, SecAggSpec, TrainSpec
from privbench.trainers.budget_stop import budget_stop_message
from privbench.trainers.checkpoint import RoundCheckpoint
from privbench.trainers.client_data import ClientData, from_shards
from privbench.trainers.client_update import stack_params, vmap_traces
from privbench.trainers.cohorts import sample_cohort
from privbench.trainers.dpsgd import GradientCanaries, resolve_engine
from privbench.trainers.linear_stack import classifier_adapter
from privbench.trainers.mechanisms.base import ClientUpdateHook as ClientUpdateHook
from privbench.trainers.monitor import RollbackMonitor
from privbench.trainers.optim import RowOptimizer
from privbench.trainers.privacy_plan import PUBLIC as CENTRAL_DP_OBSERVERS
from privbench.trainers.privacy_plan import make_plan
from privbench.trainers.round_step import TamperHook, record_round, run_round
from privbench.trainers.secagg.trainer_hook import SecureRounds

if TYPE_CHECKING:  # [governance] hook types only (they import the trainers package)
    from privbench.governance.personal import PersonalHook
    from privbench.governance.population import PopulationHook


class RoundCallback(Protocol):
    """Progress: called with (round finished, rounds planned) after every round."""

    def __call__(self, done: int, planned: int) -> None: ...


LEDGER_FILE = "ledger.jsonl"
log = logging.getLogger("privbench.trainers")
# Checkpoint entries of the server optimizer's state (beside the parameters, never released).
SERVER_STATE = "server_optimizer."
__all__ = ["CENTRAL_DP_OBSERVERS", "tabular_inputs", "train_fedavg"]
# ClientUpdateHook: the audit's canary clients (trainers/mechanisms/base.py says how).
# Monitoring hook (privbench.privacy.budget_monitor.RecordHook): called with each round's history
# record and the
# DP event the round executed (None without DP) as soon as the round ends; it may add keys to the
# record (the monitor adds the epsilon spent and planned), which stay in the history. Before the
# first round it is handed the rounds a resumed checkpoint holds.
RecordCallback = RecordHook


def tabular_inputs(model: nn.Module, data: SplitData, shards: list[ClientShard]
                   ) -> tuple[ClassifierAdapter, ClientData, Batch]:
    """A classifier's trainer inputs: its adapter, the clients' padded records and the public
    pool the round monitor watches (`data.x_pop`, never a client's records).

    Args:
        model: the classifier; data: the split; shards: each client's record indices.
    Returns:
        (adapter, client data, public batch), the first three arguments of `train_fedavg`.
    """
    public = {"x": torch.from_numpy(data.x_pop).float(), "y": torch.from_numpy(data.y_pop).long()}
    return classifier_adapter(model), from_shards(data.x_train, data.y_train, shards), public


def train_fedavg(adapter: ModelAdapter, data: ClientData, public: Batch | None,
                 train: TrainSpec, privacy: PrivacySpec, seed: int,
                 on_round: RoundCallback | None = None, *,
                 work_dir: Path | None = None, tamper: TamperHook | None = None,
                 secagg: SecAggSpec | None = None,
                 client_update_hook: ClientUpdateHook | None = None,
                 on_record: RecordCallback | None = None,
                 record_rounds: Collection[int] = (),
                 gradient_canaries: GradientCanaries | None = None,
                 optimizer: str = "sgd", server_optimizer: str = "sgd",
                 engine: str = "auto", microbatch: int | None = None,
                 population: PopulationHook | None = None,
                 personal: PersonalHook | None = None) -> TrainedModel:
    """Train the adapter's model federatedly on the clients' `data`; return it with its Claim.

    Args:
        adapter: the model (classifier, Hugging Face LM, ...); its trainable parameters train.
        data: every client's padded records and counts (one row per client).
        public: public records the round monitor evaluates each round (None: only its
            non-finite check runs).
        train, privacy, seed: the plan, the DP target and the seed of every random stream.
        on_round: called with (round finished, rounds planned).
        work_dir: holds the ledger and round checkpoints (resumed from when present).
        tamper: lets a test play malicious clients by replacing what chosen clients send.
        secagg: secure aggregation of the cohort's clipped updates.
        client_update_hook, gradient_canaries: the audit's canary clients, or Dirac records
            inside example-level DP-SGD (rows: clients).
        on_record: monitoring hook on each round's record and DP event.
        record_rounds: rounds (1-based) whose server view the observations keep: the round's
            starting model, every received client update (not under secure aggregation) and
            the aggregated sum.
        optimizer: the clients' local optimizer ("sgd" or "adam", fresh state each round).
        server_optimizer: the server's step on the mean update ("sgd" with `train.server_lr`,
            or "adam": DP-FedAdam; post-processing of the noised mean).
        engine: the per-example gradient engine of example-level DP-SGD.
        microbatch: examples per row in one call of the vmap engine (None: what fits memory).
        population: [governance] the clients that may be sampled each round (consent,
            onboarding, withdrawals; privbench.governance.population); None: every client.
        personal: [governance] FedPer personal layers (privbench.governance.personal): kept per
        client,
            never sent, clipped, noised or aggregated; None: every layer is shared.
    Returns:
        The released model, its Claim, observations and per-round history.
    """
    n_clients = data.n_clients
    distributed = secagg is not None and secagg.enabled and secagg.distributed_dp
    plan = make_plan(train, privacy, n_clients, mean_shard=float(data.counts.float().mean()),
                     distributed=distributed)
    gens = rng_streams(seed)
    ledger = PrivacyLedger(work_dir / LEDGER_FILE if work_dir else None, privacy.delta,
                           privacy.neighbouring)
    params = adapter.init_params()
    initial = {name: p.detach().clone() for name, p in params.items()}  # the audit's origin
    per_example = plan.mechanism.uses_per_example_engine
    if per_example:  # checked before the first round: an engine that cannot run is a
        # one-line error naming model.engine; "auto" picks the fastest that runs on this model
        first = torch.nonzero(data.counts > 0).flatten()[:1]
        engine = resolve_engine(adapter, stack_params(params, 1), data.rows(first).batch, engine)
        log.info("per-example gradient engine: %s", engine)
    vectorised = per_example or vmap_traces(
        adapter, params, data.rows(torch.nonzero(data.counts > 0).flatten()[:1]).batch)
    if not vectorised:  # checked before the first round, as the engine is
        log.info("local training: vmap cannot trace this model; clients train row by row")
    monitor = RollbackMonitor(adapter, public, train.max_accuracy_drop)
    server = RowOptimizer(server_optimizer, params, train.server_lr)
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
        server.load_state({k[len(SERVER_STATE):]: v for k, v in resumed.params.items()
                           if k.startswith(SERVER_STATE)})
        iterates = [{name: it[name] for name in params} for it in resumed.iterates]
        start_round, history, clip = state["round"], resumed.history, state["clip"]
        stopped = state.get("stopped")
        monitor.best_accuracy, monitor.good_round = state["best_accuracy"], state["round"]
    # the ledger continues from the checkpoint's round (rounds after it run again, alike)
    ledger.truncate(resumed.state["ledger_bytes"] if resumed is not None else 0)
    if on_record is not None:
        rows = [h for h in history if "stopped" not in h]
        on_record.restart(rows, ledger.round_events() if plan.private else [None] * len(rows),
                         ledger)
    monitor.good = {n: p.clone() for n, p in params.items()}

    recorded: dict[str, dict] = {"round_params": {}, "client_updates": {}, "aggregates": {},
                                 "cohorts": {}}
    if resumed is not None:  # the recorded rounds a resumed checkpoint holds
        for kind, rounds in resumed.recorded.items():
            recorded.setdefault(kind, {}).update(rounds)
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
        if population is not None:  # [governance] only consenting, onboarded clients
            sampled = population.filter(r + 1, sampled, record, ledger)
        stopped = budget_stop_message(plan, ledger, r, sampled, privacy.max_epsilon)
        if stopped is not None:
            log.warning(stopped)
            history.append({"round": r + 1, "stopped": stopped})
            break
        clients = [int(c) for c in sampled]
        view: dict[str, Any] | None = {} if r + 1 in record_rounds else None
        start_params = params
        step, clip_next = run_round(adapter, plan, params, data, sampled, clients, train,
                                     clip, gens, r, record, tamper, secure,
                                     client_update_hook, view, gradient_canaries,
                                     optimizer=optimizer, engine=engine,
                                     vectorised=vectorised, microbatch=microbatch,
                                     personal=personal)
        if view is not None:  # hook for the inversion attacks (attacks.inversion.rounds)
            record_round(recorded, r + 1, start_params, view, secure is None)
        if step is not None and personal is not None:  # [governance] no step on personal layers
            step = {n: step.get(n, torch.zeros_like(p)) for n, p in params.items()}
        if step is not None:  # the mean update is a descent direction: minus it is a gradient
            params = {name: p.clone() for name, p in params.items()}
            server.step(params, {name: -u for name, u in step.items()})
        params, rollback = monitor.check(r + 1, params)
        if rollback is not None:
            record["rollback"] = rollback
            log.warning("round %d rolled back to round %d: %s", r + 1,
                        rollback["rolled_back_to"], rollback["reason"])
        round_event = plan.run_event(r, len(clients)) if plan.private else None
        if round_event is not None and secure is not None:  # [secagg] the realised noise
            round_event = secure.round_event(plan.cohort / plan.n_clients) or round_event
        if round_event is not None:
            ledger.record_round(r + 1, round_event, clients, plan.client_event(r), clip=clip)
        clip = clip_next
        iterates.append({name: p.clone() for name, p in params.items()})
        history.append(record)
        if on_record is not None:
            on_record(record, round_event)
        if checkpoint is not None:
            saved = {**params, **{SERVER_STATE + k: v for k, v in server.state().items()}}
            checkpoint.save(params=saved, iterates=iterates, history=history, generators=gens,
                            state={"round": r + 1, "clip": clip, "stopped": stopped,
                                   "best_accuracy": monitor.best_accuracy,
                                   "ledger_bytes": ledger.size}, recorded=recorded)
        if on_round is not None:
            on_round(r + 1, train.rounds)

    model = adapter.release(params)
    rounds_run = sum(1 for h in history if "stopped" not in h)
    claim = plan.claim(ledger, rounds_run, privacy.clip)
    if stopped is not None:
        claim.notes.append(stopped)
    if secure is not None:  # [secagg] distributed DP: accounted from the realised noise
        claim = secure.claim(claim)
    observations = Observations(
        final_params={name: p.clone() for name, p in params.items()},
        initial_params=initial,
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


