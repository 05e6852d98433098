"""privbench.integrations.flower: a Flower simulation with server-side DP clipping, audited.

The federation is the README's Flower example, run as printed: a NumPyClient per digits shard (20
clients), FedAvg wrapped in Flower's DifferentialPrivacyServerSideFixedClipping, a ServerApp and
a ClientApp run by Flower's simulation engine (`run_simulation`, Ray), with the audit's wrap()
around the strategy (canary clients join, every round's global model is recorded). The run is
scored as privbench's own client-level one-run audit on `iterates`. The team claims epsilon 2 at
delta 1e-5 for 5 rounds with every client in every round: the README's honest run must PASS and
the same federation with a noise multiplier 10x below the claim's must FAIL.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from readme_examples import readme_example

from privbench.integrations.flower import FlowerAudit, FlowerAuditError

DELTA, CLAIM, ROUNDS, CLIENTS = 1e-5, 2.0, 5, 20


@pytest.fixture(scope="module")
def readme_run() -> dict:
    """The README's Flower example, executed: its honest run and its federate()."""
    namespace: dict = {}
    exec(compile(readme_example("flower"), "README.md:flower", "exec"), namespace)
    return namespace


def check(variant: str, audit: FlowerAudit, result) -> None:
    print(f"\n{variant}: {result.line()}; {result.bound.details['correct']}/"
          f"{result.bound.details['guesses']} guesses right")
    assert len(audit.recorder.iterates) == ROUNDS and result.details["rounds"] == ROUNDS
    # Every included canary client took part in every round, through Flower's DP wrapper.
    assert audit.canaries.rates == [1.0] * ROUNDS
    assert result.rows[0].details["verdict"] == result.verdict


@pytest.mark.slow
def test_honest_flower_dp_simulation_passes(readme_run):
    result, audit = readme_run["result"], readme_run["audit"]
    check("honest", audit, result)
    assert result.claim.epsilon == pytest.approx(CLAIM, abs=0.01)
    assert result.verdict == "PASS"


@pytest.mark.slow
def test_flower_noise_multiplier_10x_below_the_claim_fails(readme_run):
    audit = FlowerAudit(canaries=200, seed=0)
    readme_run["federate"](readme_run["z"] / 10, audit)
    result = audit.result(delta=DELTA, claim=CLAIM)
    check("noise 10x below the claim", audit, result)
    assert result.claim.epsilon > 10 * CLAIM  # what the strategy was configured with
    assert result.verdict == "FAIL"


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


@pytest.mark.slow
def test_client_side_clipping_mod_run_with_weak_noise_fails(readme_run):
    """The README's clients behind Flower's fixedclipping_mod and the client-side DP wrapper:
    canary clients send updates within the clip (as the mod would leave them) and the wrapper's
    noise, 10x below the claim's, lets the audit refute the claim."""
    from flwr.client import ClientApp
    from flwr.client.mod import fixedclipping_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping
    from flwr.simulation import run_simulation

    ns = readme_run
    audit = FlowerAudit(canaries=200, seed=1)

    def server_fn(context):
        np.random.seed(1)
        fedavg = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=CLIENTS,
                        min_available_clients=CLIENTS,
                        initial_parameters=ndarrays_to_parameters(
                            ns["get_weights"](ns["make_model"]())))
        dp = DifferentialPrivacyClientSideFixedClipping(
            fedavg, noise_multiplier=ns["z"] / 10, clipping_norm=1.0,
            num_sampled_clients=CLIENTS)
        return ServerAppComponents(strategy=audit.wrap(dp), config=ServerConfig(num_rounds=ROUNDS))

    def client_fn(context):
        return ns["DigitsClient"](int(context.node_config["partition-id"])).to_client()

    run_simulation(server_app=ServerApp(server_fn=server_fn),
                   client_app=ClientApp(client_fn=client_fn, mods=[fixedclipping_mod]),
                   num_supernodes=CLIENTS,
                   backend_config={"client_resources": {"num_cpus": 1},
                                   "init_args": {"num_cpus": 2}})
    result = audit.result(delta=DELTA, claim=CLAIM)
    check("client-side clipping, noise 10x below the claim", audit, result)
    assert result.details["dp_strategy"] == "DifferentialPrivacyClientSideFixedClipping"
    assert result.verdict == "FAIL"
