"""Independent federated runs side by side: shadow models and the multi-run audit train K runs as
one vmapped model through the target's own registered mechanisms, so that each run samples, trains,
clips and noises exactly as train_fedavg does."""

from __future__ import annotations

from collections.abc import Callable

import torch

from privbench.models.adapter import ModelAdapter, Params
from privbench.spec.schema import TrainSpec
from privbench.trainers.client_data import ClientData
from privbench.trainers.cohorts import cohort_masks
from privbench.trainers.dpsgd import GradientCanaries
from privbench.trainers.mechanisms import MECHANISMS
from privbench.trainers.mechanisms.base import ClientRound, ClientUpdateHook, ServerRound
from privbench.trainers.optim import RowOptimizer


def train_runs(adapter: ModelAdapter, init: Params, data: ClientData, train: TrainSpec, *,
               runs: int, clip: float | None, noise_multiplier: Callable[[int], float],
               gens: dict[str, torch.Generator], seed: int, example_level: bool = False,
               rounds: int | None = None, local_steps: int = 1, record_rate: float = 1.0,
               gradient_canaries: GradientCanaries | None = None,
               on_round: Callable[[int, Params], None] | None = None,
               optimizer: str = "sgd", server_optimizer: str = "sgd", engine: str = "auto",
               microbatch: int | None = None,
               client_update_hook: ClientUpdateHook | None = None) -> Params:
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
        gens: the "sampling", "local" and "noise" streams (`rng_streams(seed)` replays the target).
        seed: the seed of the shuffle sampler's permutations.
        example_level: DP-SGD inside the clients (`dp_sgd` with `local_steps` Poisson batches
            of rate `record_rate`) instead of local SGD with client-level clipping and noise.
        rounds: rounds to run (None: `train.rounds`).
        gradient_canaries: Dirac canaries inside example-level DP-SGD (rows: the data's rows).
        on_round: called with (rounds done, the stacked parameters) after each round.
        optimizer, server_optimizer, engine, microbatch: the target's local optimizer, server
            step (one optimizer state per run), per-example engine and vmap microbatch.
        client_update_hook: the audit's canary clients (called with the round's data rows).
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
    server = RowOptimizer(server_optimizer, glob, train.server_lr, rows=runs)
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
                gradient_canaries=gradient_canaries, optimizer=optimizer, engine=engine,
                microbatch=microbatch, hook=client_update_hook))
        # each run's server step (the mean update; minus it is a gradient), one state per run
        steps = {n: torch.zeros_like(p) for n, p in glob.items()}
        active = torch.zeros(runs, dtype=torch.bool)
        if updates is not None and mechanism is not central \
                and run_of_row.unique().numel() == rows.numel():
            for n in glob:  # one client per run this round: its mean is its update
                steps[n][run_of_row] = updates[n]
            active[run_of_row] = True
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
                steps[n][k] = step[n]
            active[k] = True
        if bool(active.any()):
            server.step(glob, {n: -s for n, s in steps.items()}, active=active)
        if on_round is not None:
            on_round(r + 1, glob)
    return glob
