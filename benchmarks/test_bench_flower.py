"""privbench against Flower's simulation engine on the same federated task, side by side.

The task: digits, 100 clients, 10 per round, 20 rounds, an MLP 64-256-10, one local epoch of SGD
(batch 16, lr 0.1), with client-level DP (server-side clipping at 1 and Gaussian noise, the noise
multiplier calibrated once for epsilon 8 at delta 1e-5 and used by both) and without. privbench
runs `train_fedavg` (the trainer a cell runs: data, partition, model, rounds with accounting,
monitor and records); Flower runs `run_simulation` (ServerApp, ClientApp, Ray) with FedAvg, and
for DP its `DifferentialPrivacyServerSideFixedClipping`. Flower is a benchmark-only dependency
(the `flower` extra). Both run in this process, one torch thread each client.

Figures, each a ratio to Flower (the group's baseline) in one run:
- end to end: one whole federation, start-up included (groups `flower-e2e-*`);
- steady state: the median time between consecutive rounds after the first 5 (in `extra_info`
  as `steady_round_ms`, printed with its ratio by benchmarks/conftest.py).

Run: .venv/bin/python -m pytest benchmarks/test_bench_flower.py -q -s
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

CLIENTS, COHORT, ROUNDS, HIDDEN, BATCH, LR = 100, 10, 20, 256, 16, 0.1
EPSILON, DELTA, CLIP, SEED, WARM = 8.0, 1e-5, 1.0, 0, 5


def _noise_multiplier(private: bool) -> float:
    from privbench.privacy.accounting import calibrate_noise_multiplier

    return calibrate_noise_multiplier(EPSILON, DELTA, COHORT / CLIENTS, ROUNDS) if private else 0.0


def _steady_ms(stamps: list[float]) -> float:
    gaps = np.diff(stamps)[WARM:]
    return float(statistics.median(gaps)) * 1e3


def run_privbench(private: bool) -> list[float]:
    """One privbench federation as a cell trains it (data, partition, model, `train_fedavg`
    with its round monitor and work folder: ledger, checkpoints); the time at every round's end.
    """
    from privbench.data.partition import partition
    from privbench.data.splits import load_split
    from privbench.models import build_model
    from privbench.privacy.budget_monitor import RoundMonitor
    from privbench.spec.schema import CellSpec
    from privbench.trainers import tabular_inputs, train_fedavg

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    spec = CellSpec.model_validate({
        "name": "flower-bench", "seed": SEED, "data": {"name": "digits", "clients": CLIENTS},
        "model": {"hidden": [HIDDEN]},
        "train": {"rounds": ROUNDS, "cohort": COHORT, "local_epochs": 1, "batch_size": BATCH,
                  "lr": LR},
        "privacy": {"epsilon": EPSILON if private else float("inf"), "delta": DELTA,
                    "clip": CLIP}})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = load_split(spec.data, SEED)
        shards = partition(spec.data, data.y_train, SEED)
        model = build_model(spec.model, data.n_features, data.n_classes, SEED)
        stamps: list[float] = []
        train_fedavg(*tabular_inputs(model, data, shards), spec.train, spec.privacy, SEED,
                     on_round=lambda done, total: stamps.append(time.perf_counter()),
                     work_dir=folder / "work", on_record=RoundMonitor(folder / "rounds.jsonl",
                                                                      spec))
    assert len(stamps) == ROUNDS
    return stamps


def run_flower(private: bool) -> list[float]:
    """One Flower simulation of the same federation; the time at the end of every round."""
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
    from flwr.simulation import run_simulation
    from sklearn.datasets import load_digits
    from torch import nn

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    shards = np.array_split(np.random.default_rng(SEED).permutation(len(y)), CLIENTS)

    def make_model() -> nn.Module:
        torch.manual_seed(SEED)
        return nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))

    def weights(model: nn.Module) -> list[np.ndarray]:
        return [v.detach().numpy().copy() for v in model.state_dict().values()]

    class Client(NumPyClient):
        def __init__(self, shard: int):
            self.shard, self.model = shard, make_model()

        def fit(self, parameters, config):
            torch.set_num_threads(1)
            self.model.load_state_dict({k: torch.from_numpy(a) for k, a in
                                        zip(self.model.state_dict(), parameters, strict=True)})
            opt = torch.optim.SGD(self.model.parameters(), lr=LR)
            idx = shards[self.shard]
            xs, ys = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
            for i in range(0, len(xs), BATCH):
                opt.zero_grad()
                nn.functional.cross_entropy(self.model(xs[i:i + BATCH]),
                                            ys[i:i + BATCH]).backward()
                opt.step()
            return weights(self.model), len(xs), {}

    stamps: list[float] = []

    def on_round(server_round, parameters, config):  # FedAvg's evaluate_fn: once per round
        if server_round > 0:
            stamps.append(time.perf_counter())

    def server_fn(context: Context):
        np.random.seed(SEED)
        strategy = FedAvg(fraction_fit=COHORT / CLIENTS, fraction_evaluate=0.0,
                          min_fit_clients=COHORT, min_available_clients=CLIENTS,
                          evaluate_fn=on_round,
                          initial_parameters=ndarrays_to_parameters(weights(make_model())))
        if private:
            strategy = DifferentialPrivacyServerSideFixedClipping(
                strategy, noise_multiplier=_noise_multiplier(True), clipping_norm=CLIP,
                num_sampled_clients=COHORT)
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=ROUNDS))

    def client_fn(context: Context):
        return Client(int(context.node_config["partition-id"])).to_client()

    run_simulation(server_app=ServerApp(server_fn=server_fn),
                   client_app=ClientApp(client_fn=client_fn), num_supernodes=CLIENTS,
                   backend_config={"client_resources": {"num_cpus": 1},
                                   "init_args": {"num_cpus": 2}})
    assert len(stamps) == ROUNDS
    return stamps


@pytest.mark.parametrize("dp", ["dp", "no-dp"])
@pytest.mark.parametrize("variant", ["baseline: flower run_simulation",
                                     "privbench: train_fedavg"])
def test_privbench_against_flower(benchmark, dp, variant):
    fn = run_flower if variant.startswith("baseline") else run_privbench
    benchmark.group = f"flower-e2e-{dp}"
    stamps = benchmark.pedantic(fn, args=(dp == "dp",), rounds=1, iterations=1)
    benchmark.extra_info["steady_round_ms"] = _steady_ms(stamps)
    benchmark.extra_info["rounds"] = ROUNDS
