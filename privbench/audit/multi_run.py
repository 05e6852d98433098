"""Multi-run audit of example-level DP-SGD: N runs with a Dirac canary, N without, side by side.

Each run is the cell's centralised DP-SGD plan (same data, model, rounds, sampling rate and
calibrated noise) executed by the trainer's `train_runs` (trainers/fedavg.py), with independent
sampling and noise; the runs of a chunk are the rows of one batched model. Runs with an even index
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
from privbench.spec.schema import CellSpec
from privbench.trainers.client_data import ClientData
from privbench.trainers.client_update import stack_params
from privbench.trainers.dpsgd import GradientCanaries
from privbench.trainers.fedavg import train_runs
from privbench.trainers.linear_stack import classifier_adapter
from privbench.trainers.privacy_plan import PrivacyPlan, make_plan

# Floats of one chunk's gathered batch (runs x records x features): bounds the memory.
CHUNK_FLOATS = 2**25
# Canaries simulated per world from the claimed mechanism to design the test.
SIMULATED = 200_000


def run_canary_coordinates(spec: CellSpec, data: SplitData, plan: PrivacyPlan, coord: int,
                           runs: int, rounds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train `2 * runs` DP-SGD runs, the canary in the even ones; return the canary coordinate
    after each round, shape (2 * runs, rounds + 1), and the inclusion bits."""
    t, p = spec.train, spec.privacy
    n = len(data.y_train)
    model = build_model(spec.model, data.n_features, data.n_classes, spec.seed)
    adapter = classifier_adapter(model)
    initial = adapter.init_params()
    total = 2 * runs
    chunk = max(2, min(total, CHUNK_FLOATS // max(1, n * data.n_features)) // 2 * 2)
    x = torch.from_numpy(data.x_train).float()
    y = torch.from_numpy(data.y_train).long()
    bits = np.arange(total) % 2 == 0
    values = np.zeros((total, rounds + 1))
    one_client = t.model_copy(update={"cohort": 1, "sampling": "poisson"})
    for start in range(0, total, chunk):
        k = min(chunk, total - start)
        canaries = GradientCanaries(torch.from_numpy(bits[start:start + k]).unsqueeze(1),
                                    torch.tensor([coord]), spec.audit.canary_norm * p.clip)
        # Each chunk its own streams; every run is one client holding every record, in every
        # round's cohort (rate 1, so the sampling stream decides nothing).
        gens = {"sampling": torch.Generator().manual_seed(seed),
                "local": torch.Generator().manual_seed(seed * 1_000_003 + 2 * start + 1),
                "noise": torch.Generator().manual_seed(seed * 1_000_003 + 2 * start + 2)}
        runs_data = ClientData({"x": x.expand(k, *x.shape), "y": y.expand(k, n)},
                               torch.full((k,), n))
        values[start:start + k, 0] = _flat(stack_params(initial, k))[:, coord]

        def keep(done: int, params: dict[str, torch.Tensor], at: int = start, k: int = k
                 ) -> None:
            values[at:at + k, done] = _flat(params)[:, coord]

        train_runs(adapter, stack_params(initial, k), runs_data, one_client, runs=k,
                   clip=p.clip, noise_multiplier=plan.update_noise_multiplier, gens=gens,
                   seed=seed, example_level=True, rounds=rounds, local_steps=plan.local_steps,
                   record_rate=plan.record_rate, gradient_canaries=canaries, on_round=keep)
    return values, bits


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
