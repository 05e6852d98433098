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
import math
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from privbench.data.partition import ClientShard
from privbench.data.splits import SplitData
from privbench.models.adapter import Batch, ClassifierAdapter, ModelAdapter, Params
from privbench.privacy import accounting
from privbench.privacy.budget_monitor import RecordHook
from privbench.privacy.ledger import PrivacyLedger
from privbench.run.observations import Observations, TrainedModel
from privbench.spec.schema import PrivacySpec, SecAggSpec, TrainSpec
from privbench.trainers.checkpoint import RoundCheckpoint
from privbench.trainers.client_data import ClientData, from_shards
from privbench.trainers.client_update import stack_params, vmap_traces
from privbench.trainers.dpsgd import GradientCanaries, resolve_engine
from privbench.trainers.linear_stack import classifier_adapter
from privbench.trainers.mechanisms import MECHANISMS
from privbench.trainers.mechanisms.base import PLAIN_SUM, ClientRound, ServerRound
from privbench.trainers.mechanisms.base import ClientUpdateHook as ClientUpdateHook
from privbench.trainers.mechanisms.secure_aggregation import SecureSum
from privbench.trainers.monitor import RoundMonitor
from privbench.trainers.optim import RowOptimizer
from privbench.trainers.privacy_plan import PUBLIC as CENTRAL_DP_OBSERVERS
from privbench.trainers.privacy_plan import PrivacyPlan, make_plan
from privbench.trainers.screening import screen_updates
from privbench.trainers.secagg.trainer_hook import SecureRounds

if TYPE_CHECKING:  # [governance] hook types only (they import the trainers package)
    from privbench.governance.personal import PersonalHook
    from privbench.governance.population import PopulationHook

RoundCallback = Callable[[int, int], None]  # (round finished, rounds planned)
# (round, client ids, the updates they honestly send (K, ...)) -> {row: update sent instead}
TamperHook = Callable[[int, list[int], dict[str, torch.Tensor]], dict[int, Any]]
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


def generators(seed: int) -> dict[str, torch.Generator]:
    """Separate random streams, so that across cells of a sweep the same clients are sampled each
    round and only the noise differs."""
    names = ("sampling", "local", "noise", "dropout", "clip")
    return {n: torch.Generator().manual_seed(seed * 1_000_003 + i + 1)
            for i, n in enumerate(names)}


def sample_cohort(train: TrainSpec, n_clients: int, r: int, seed: int,
                  gen: torch.Generator) -> torch.Tensor:
    """Round r's cohort: Poisson, a fixed-size uniform draw, or the next slice of a shuffle."""
    if train.sampling == "poisson":  # the draw of one run of `cohort_masks`
        return torch.nonzero(cohort_masks(train, n_clients, 1, r, seed, gen)[0]).flatten()
    m = int(train.cohort)
    if train.sampling == "fixed_cohort":
        return torch.randperm(n_clients, generator=gen)[:m].sort().values
    per_epoch = max(1, n_clients // m)
    epoch, slot = divmod(r, per_epoch)
    perm = torch.randperm(n_clients, generator=torch.Generator().manual_seed(
        seed * 7919 + epoch))
    return perm[slot * m:(slot + 1) * m].sort().values


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
    gens = generators(seed)
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
    monitor = RoundMonitor(adapter, public, train.max_accuracy_drop)
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
        stopped = _budget_check(plan, ledger, r, sampled, privacy.max_epsilon)
        if stopped is not None:
            log.warning(stopped)
            history.append({"round": r + 1, "stopped": stopped})
            break
        clients = [int(c) for c in sampled]
        view: dict[str, Any] | None = {} if r + 1 in record_rounds else None
        start_params = params
        step, clip_next = _one_round(adapter, plan, params, data, sampled, clients, train,
                                     clip, gens, r, record, tamper, secure,
                                     client_update_hook, view, gradient_canaries,
                                     optimizer=optimizer, engine=engine,
                                     vectorised=vectorised, microbatch=microbatch,
                                     personal=personal)
        if view is not None:  # hook for the inversion attacks (attacks.inversion.rounds)
            _record_round(recorded, r + 1, start_params, view, secure is None)
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


def _one_round(adapter: ModelAdapter, plan: PrivacyPlan, params: Params, data: ClientData,
               sampled: torch.Tensor, clients: list[int], train: TrainSpec, clip: float,
               gens: dict[str, torch.Generator], r: int, record: dict[str, Any],
               tamper: TamperHook | None, secure: SecureRounds | None = None,
               client_update_hook: ClientUpdateHook | None = None,
               view: dict[str, Any] | None = None,
               gradient_canaries: GradientCanaries | None = None, *,
               optimizer: str = "sgd", engine: str = "auto", vectorised: bool = True,
               microbatch: int | None = None, personal: PersonalHook | None = None
               ) -> tuple[Params | None, float]:
    """Train the cohort, screen and aggregate; returns (server step or None, next round's clip).

    The plan's mechanism (trainers/mechanisms/) does the clients' side (training and any
    client-side clipping and noise) and the server's (clipping, noise, mean); the loop only
    carries the updates between them and screens what arrives.
    """
    mechanism = plan.mechanism
    z = mechanism.noise_multiplier(r)
    template = params if personal is None else personal.shared(params)  # what clients send
    sent = None
    if sampled.numel() > 0:
        sent = mechanism.client_updates(ClientRound(
            adapter, params, data, sampled, train, r, clip, z, gens, record,
            local_steps=plan.local_steps, record_rate=plan.record_rate,
            hook=client_update_hook, gradient_canaries=gradient_canaries, personal=personal,
            optimizer=optimizer, engine=engine, vectorised=vectorised, microbatch=microbatch))
    received, kept = None, []
    if sent is not None:
        replaced = tamper(r + 1, clients, sent) if tamper is not None else None
        received, kept, rejections = screen_updates(sent, clients, template,
                                                    max_norm=train.max_update_norm,
                                                    round_no=r + 1, replaced=replaced)
        if rejections:
            record["rejected"] = rejections
    out = mechanism.aggregate(ServerRound(
        received, template, [clients[k] for k in kept] if received is not None else [], r, clip,
        z, train.cohort, gens, record, view, PLAIN_SUM if secure is None else SecureSum(secure)))
    return out.step, out.next_clip


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


def cohort_masks(train: TrainSpec, n_clients: int, runs: int, r: int, seed: int,
                 gen: torch.Generator) -> torch.Tensor:
    """Round r's cohort of each of `runs` independent runs as a (runs, n_clients) bool mask.

    Poisson draws every run's clients in one call on the shared sampling stream (one run draws
    exactly what `sample_cohort` draws, so a single run replays `train_fedavg`'s cohorts); the
    other samplers draw run by run, in run order.
    """
    if train.sampling == "poisson":
        return torch.rand(runs, n_clients, generator=gen) < train.cohort / n_clients
    masks = torch.zeros(runs, n_clients, dtype=torch.bool)
    for k in range(runs):
        masks[k, sample_cohort(train, n_clients, r, seed, gen)] = True
    return masks


def train_runs(adapter: ModelAdapter, init: Params, data: ClientData, train: TrainSpec, *,
               runs: int, clip: float | None, noise_multiplier: Callable[[int], float],
               gens: dict[str, torch.Generator], seed: int, example_level: bool = False,
               rounds: int | None = None, local_steps: int = 1, record_rate: float = 1.0,
               gradient_canaries: GradientCanaries | None = None,
               on_round: Callable[[int, Params], None] | None = None) -> Params:
    """Train `runs` independent federated runs side by side; return their parameters, (K, ...).

    Shadow models (attacks/membership/shadows.py) and the multi-run audit
    (privbench/audit/multi_run.py)
    are calls to this, so that their runs sample, train, clip and noise exactly as the target's
    `train_fedavg` does. Run k owns the clients `k * n + c` of `data` (n = data.n_clients //
    runs): its own inclusion mask and partition. Every (run, sampled client) pair of a round is
    one row of a single vmapped `local_sgd` (or `dp_sgd`) call, each row starting from its own
    run's global model; the server step (clip, noise, mean) runs per run, in run order, on the
    shared noise stream. Server-side extras of `train_fedavg` (screening, rollback, ledger,
    checkpoints) are not part of the replicated mechanism and do not run here.

    Args:
        adapter: the model; init: each run's starting parameters, stacked (K, ...).
        data: the runs' clients, run-major (runs * n rows).
        train: rounds, cohort, sampling, local epochs, batch size and learning rates.
        runs: K; clip: the clipping bound C (None without DP).
        noise_multiplier: round index -> the executed noise multiplier (0: no DP noise).
        gens: the "sampling", "local" and "noise" streams (`generators(seed)` replays the target).
        seed: the seed of the shuffle sampler's permutations.
        example_level: DP-SGD inside the clients (`dp_sgd` with `local_steps` Poisson batches
            of rate `record_rate`) instead of local SGD with client-level clipping and noise.
        rounds: rounds to run (None: `train.rounds`).
        gradient_canaries: Dirac canaries inside example-level DP-SGD (rows: the data's rows).
        on_round: called with (rounds done, the stacked parameters) after each round.
    Returns:
        The K runs' final parameters, each (K, ...).
    """
    n_clients = data.n_clients // runs
    rows_of = torch.arange(data.n_clients).view(runs, n_clients)
    glob = {n: p.detach().clone() for n, p in init.items()}
    # The target's registered mechanisms; each round's executed z comes from `noise_multiplier`
    # in the round objects (no plan here, so the mechanisms' own accounted z is unused).
    private = MECHANISMS.get("example").load()() if example_level else None
    central, plain = MECHANISMS.get("central").load()(), MECHANISMS.get("none").load()()
    for r in range(train.rounds if rounds is None else rounds):
        rows = rows_of[cohort_masks(train, n_clients, runs, r, seed, gens["sampling"])]
        run_of_row = rows // n_clients
        updates = None
        z = noise_multiplier(r)
        # the target's mechanism: DP-SGD in the clients, central DP-FedAvg, or none
        mechanism = private or (central if z > 0 else plain)
        if rows.numel():
            updates = mechanism.client_updates(ClientRound(
                adapter, {n: p[run_of_row] for n, p in glob.items()}, data, rows, train, r,
                clip if clip is not None else 0.0, z, gens, batched=True,
                local_steps=local_steps, record_rate=record_rate,
                gradient_canaries=gradient_canaries))
        if updates is not None and mechanism is not central \
                and run_of_row.unique().numel() == rows.numel():
            for n in glob:  # one client per run this round: its mean is its update
                glob[n][run_of_row] += train.server_lr * updates[n]
            updates = None
        for k in range(runs if updates is not None or mechanism is central else 0):
            mine = (run_of_row == k).nonzero().flatten()
            part = None if updates is None or not mine.numel() else {
                n: u[mine] for n, u in updates.items()}
            if part is None and mechanism is not central:
                continue
            step = mechanism.aggregate(ServerRound(
                part, {n: p[k] for n, p in glob.items()}, [], r,
                clip if clip is not None else 0.0, z, train.cohort, gens)).step
            for n in glob:
                glob[n][k] += train.server_lr * step[n]
        if on_round is not None:
            on_round(r + 1, glob)
    return glob
