"""Multi-run audit of example-level DP-SGD: N runs with a Dirac canary, N without, side by side.

Each run is the cell's centralised DP-SGD plan (same data, model, rounds, sampling rate and
calibrated noise) executed by the trainer's `train_runs` (trainers/fedavg.py), with independent
sampling and noise; the runs of a chunk are the rows of one batched model, and a chunk is the
unit a Ray task trains when the cell runs on the Ray backend. Runs with an even index
hold the canary. The auditor reads the canary's coordinate on the observed surface and scores it by
the claimed mechanism's likelihood ratio; the threshold is designed on scores simulated from the
claimed mechanism, before any run, so every run certifies (two-world bound, no selection split).
When each step is an unsampled Gaussian (sampling rate 1), the claimed mechanism is mu-GDP and the
Gaussian-DP route is valid and tight (Nasr et al. 2023); otherwise the Clopper-Pearson route, valid
for any mechanism.

Server-side extras of the federated loop (update screening, the rollback monitor) are not part of
the audited mechanism and do not run here.
"""

from __future__ import annotations

import numpy as np
import torch

from privbench.audit.estimators import EpsilonBound, planned_threshold, two_world_bound
from privbench.audit.gradient_canaries import claimed_mechanism, quiet_coordinates
from privbench.data.splits import SplitData
from privbench.models import build_model
from privbench.rng import rng_streams
from privbench.spec.schema import CellSpec
from privbench.trainers.client_data import ClientData
from privbench.trainers.client_update import stack_params
from privbench.trainers.dpsgd import GradientCanaries
from privbench.trainers.linear_stack import classifier_adapter
from privbench.trainers.privacy_plan import PrivacyPlan, make_plan
from privbench.trainers.runs import train_runs

# Floats of one chunk's gathered batch (runs x records x features): bounds the memory.
CHUNK_FLOATS = 2**25
# Canaries simulated per world from the claimed mechanism to design the test.
SIMULATED = 200_000


def run_canary_coordinates(spec: CellSpec, data: SplitData, plan: PrivacyPlan, coord: int,
                           runs: int, rounds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train `2 * runs` DP-SGD runs, the canary in the even ones; return the canary coordinate
    after each round, shape (2 * runs, rounds + 1), and the inclusion bits.

    The runs train in chunks (each its own streams), one after another here, or as Ray tasks
    when the cell runs on the Ray backend (privbench/backends/batches.py): the same values
    either way, bit for bit."""
    from privbench.backends.batches import map_batches

    n = len(data.y_train)
    total = 2 * runs
    chunk = max(2, min(total, CHUNK_FLOATS // max(1, n * data.n_features)) // 2 * 2)
    bits = np.arange(total) % 2 == 0
    items = [(start, min(chunk, total - start)) for start in range(0, total, chunk)]
    parts = map_batches(_train_chunk, items, {
        "spec": spec, "x": data.x_train, "y": data.y_train, "n_classes": data.n_classes,
        "plan": plan, "coord": coord, "rounds": rounds, "seed": seed, "bits": bits})
    return np.concatenate(parts), bits


def _train_chunk(start: int, k: int, *, spec: CellSpec, x: np.ndarray, y: np.ndarray,
                 n_classes: int, plan: PrivacyPlan, coord: int, rounds: int, seed: int,
                 bits: np.ndarray) -> np.ndarray:
    """Runs `start .. start + k - 1`: the canary coordinate after each round, (k, rounds + 1)."""
    t, p = spec.train, spec.privacy
    n = len(y)
    adapter = classifier_adapter(build_model(spec.model, x.shape[1], n_classes, spec.seed))
    initial = adapter.init_params()
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    values = np.zeros((k, rounds + 1))
    one_client = t.model_copy(update={"cohort": 1, "sampling": "poisson"})
    canaries = GradientCanaries(torch.from_numpy(bits[start:start + k]).unsqueeze(1),
                                torch.tensor([coord]), spec.audit.canary_norm * p.clip)
    # Each chunk its own streams; every run is one client holding every record, in every
    # round's cohort (rate 1, so the sampling stream decides nothing).
    gens = {"sampling": torch.Generator().manual_seed(seed),
            **rng_streams(seed, ("local", "noise"), first=2 * start + 1)}
    runs_data = ClientData({"x": xt.expand(k, *xt.shape), "y": yt.expand(k, n)},
                           torch.full((k,), n))
    values[:, 0] = _flat(stack_params(initial, k))[:, coord]

    def keep(done: int, params: dict[str, torch.Tensor]) -> None:
        values[:, done] = _flat(params)[:, coord]

    train_runs(adapter, stack_params(initial, k), runs_data, one_client, runs=k,
               clip=p.clip, noise_multiplier=plan.update_noise_multiplier, gens=gens,
               seed=seed, example_level=True, rounds=rounds, local_steps=plan.local_steps,
               record_rate=plan.record_rate, gradient_canaries=canaries, on_round=keep)
    return values


def _flat(params: dict[str, torch.Tensor]) -> np.ndarray:
    """Each run's parameters as one float64 row (model order)."""
    k = next(iter(params.values())).shape[0]
    return torch.cat([q.reshape(k, -1) for q in params.values()], dim=1).double().numpy()


def multi_run_bound(spec: CellSpec, data: SplitData, *, delta: float,
                    rounds: int) -> EpsilonBound:
    """The multi-run audit of the cell's DP-SGD plan: eps_LB from `audit.runs` runs per world of
    the `rounds` the cell ran (fewer than planned when its budget stopped it)."""
    a = spec.audit
    rng = np.random.default_rng([spec.seed, 0xA0D2])
    model = build_model(spec.model, data.n_features, data.n_classes, spec.seed)
    coord = int(quiet_coordinates(model, data.x_pop, data.y_pop, 1, rng)[0])
    plan = make_plan(spec.train, spec.privacy, 1, mean_shard=float(len(data.y_train)))
    values, bits = run_canary_coordinates(spec, data, plan, coord, a.runs, rounds, spec.seed)
    mechanism = claimed_mechanism(spec, plan)
    per_round = a.surface == "iterates"
    scores = mechanism.scores(values if per_round else values[:, [0, -1]], rounds)
    gaussian = plan.record_rate >= 1.0
    route = "gdp" if gaussian else "clopper-pearson"
    # The test is designed on the claimed mechanism before any run is seen.
    sim = [mechanism.simulate(rounds, per_round, included, SIMULATED, rng)
           for included in (True, False)]
    threshold = planned_threshold(*sim, n_in=a.runs, n_out=a.runs, delta=delta, alpha=a.alpha,
                                  route=route)
    bound = two_world_bound(scores[bits], scores[~bits], delta=delta, alpha=a.alpha,
                            threshold=threshold, route=route)
    details = {**bound.details, "runs_per_world": a.runs, "coordinate": coord,
               "route_reason": "each step an unsampled Gaussian: the claim is mu-GDP" if gaussian
               else "Poisson-subsampled steps: no Gaussian trade-off curve, Clopper-Pearson"}
    if gaussian:  # the always-valid route beside it
        cp = planned_threshold(*sim, n_in=a.runs, n_out=a.runs, delta=delta, alpha=a.alpha)
        details["clopper_pearson_eps"] = two_world_bound(
            scores[bits], scores[~bits], delta=delta, alpha=a.alpha, threshold=cp).eps_lb
    return EpsilonBound(method=f"multi-run {bound.method}", eps_lb=bound.eps_lb,
                        ceiling=bound.ceiling, alpha=bound.alpha, n=bound.n, delta=delta,
                        details=details)
