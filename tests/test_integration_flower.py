"""privbench.integrations.flower: a Flower simulation with server-side DP clipping, audited.

The federation is written as a Flower user writes it: a NumPyClient per digits shard (20
clients), FedAvg wrapped in Flower's DifferentialPrivacyServerSideFixedClipping, a ServerApp and
a ClientApp run by Flower's simulation engine (`run_simulation`, Ray). The audit wraps the
strategy (canary clients join, every round's global model is recorded) and scores the run as
privbench's own client-level one-run audit on `iterates`. The team claims epsilon 2 at delta
1e-5 for 5 rounds with every client in every round; the honest run must PASS and a run whose DP
wrapper got a noise multiplier 10x below the claim's must FAIL.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from flwr.simulation import run_simulation
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from privbench import accounting
from privbench.integrations.flower import FlowerAudit, FlowerAuditError

CLIENTS, ROUNDS, DELTA, CLAIM = 20, 5, 1e-5, 2.0
x, y = load_digits(return_X_y=True)
X_TRAIN, _, Y_TRAIN, _ = train_test_split((x / 16).astype(np.float32), y, test_size=0.25,
                                          random_state=0)
SHARDS = np.array_split(np.arange(len(Y_TRAIN)), CLIENTS)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def get_weights(model: nn.Module) -> list[np.ndarray]:
    return [v.detach().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, arrays: list[np.ndarray]) -> None:
    model.load_state_dict({k: torch.from_numpy(a)
                           for k, a in zip(model.state_dict(), arrays, strict=True)})


class DigitsClient(NumPyClient):
    """One epoch of SGD (batch 8) on the client's shard."""

    def __init__(self, shard: int) -> None:
        self.shard, self.model = shard, make_model()

    def fit(self, parameters, config):
        set_weights(self.model, parameters)
        opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        xs = torch.from_numpy(X_TRAIN[SHARDS[self.shard]])
        ys = torch.from_numpy(Y_TRAIN[SHARDS[self.shard]])
        for i in range(0, len(xs), 8):
            opt.zero_grad()
            nn.functional.cross_entropy(self.model(xs[i:i + 8]), ys[i:i + 8]).backward()
            opt.step()
        return get_weights(self.model), len(xs), {}


def client_fn(context: Context):
    return DigitsClient(int(context.node_config["partition-id"])).to_client()


def federate(noise_multiplier: float, audit: FlowerAudit) -> None:
    """The user's Flower simulation, with the audit's wrap() around their DP strategy."""

    def server_fn(context: Context) -> ServerAppComponents:
        np.random.seed(0)  # Flower's DP wrapper draws its noise from numpy's global generator
        fedavg = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=CLIENTS,
                        min_available_clients=CLIENTS,
                        initial_parameters=ndarrays_to_parameters(get_weights(make_model())))
        dp = DifferentialPrivacyServerSideFixedClipping(
            fedavg, noise_multiplier=noise_multiplier, clipping_norm=1.0,
            num_sampled_clients=CLIENTS)
        return ServerAppComponents(strategy=audit.wrap(dp),
                                   config=ServerConfig(num_rounds=ROUNDS))

    run_simulation(server_app=ServerApp(server_fn=server_fn),
                   client_app=ClientApp(client_fn=client_fn), num_supernodes=CLIENTS,
                   backend_config={"client_resources": {"num_cpus": 1},
                                   "init_args": {"num_cpus": 2}})


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["honest", "noise_10x_below_claim"])
def test_flower_dp_simulation_audit(variant):
    z = accounting.calibrate_noise_multiplier(CLAIM, DELTA, 1.0, ROUNDS)  # the claim's noise
    audit = FlowerAudit(canaries=200, seed=0)
    federate(z if variant == "honest" else z / 10, audit)
    result = audit.result(delta=DELTA, claim=CLAIM)
    print(f"\n{variant}: {result.line()}; {result.bound.details['correct']}/"
          f"{result.bound.details['guesses']} guesses right")
    assert len(audit.recorder.iterates) == ROUNDS
    assert result.details["rounds"] == ROUNDS
    # Every included canary client took part in every round, through Flower's DP wrapper.
    assert audit.canaries.rates == [1.0] * ROUNDS
    if variant == "honest":
        assert result.claim.epsilon == pytest.approx(CLAIM, abs=0.01)
        assert result.verdict == "PASS"
    else:
        assert result.claim.epsilon > 10 * CLAIM  # what the strategy was configured with
        assert result.verdict == "FAIL"
    assert result.rows[0].details["verdict"] == result.verdict


def test_a_strategy_without_a_dp_wrapper_is_refused_in_one_line():
    with pytest.raises(FlowerAuditError) as err:
        FlowerAudit(canaries=20).wrap(FedAvg())
    assert "\n" not in str(err.value)
    assert "DifferentialPrivacyServerSideFixedClipping" in str(err.value)


def test_result_before_a_run_is_refused():
    audit = FlowerAudit(canaries=20)
    audit.wrap(DifferentialPrivacyServerSideFixedClipping(FedAvg(), 1.0, 1.0, CLIENTS))
    with pytest.raises(FlowerAuditError, match="no round was recorded"):
        audit.result(delta=DELTA)
