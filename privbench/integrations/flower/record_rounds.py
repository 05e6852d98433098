"""RecordRounds: a Flower strategy wrapper that keeps the global model of every round.

The initial global model (what round 1 sends) and the aggregate each round produces, as the
`iterates` surface of privbench's client-level audits: what anyone who sees every round's global
model observes. It changes nothing it passes on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.common import Parameters, Scalar, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy


class RecordRounds(Strategy):
    """Delegates everything to `strategy`; records the initial and every round's global model.

    Args:
        strategy: the strategy whose global models are recorded.
    """

    def __init__(self, strategy: Strategy) -> None:
        super().__init__()
        self.strategy = strategy
        self.initial: list[np.ndarray] | None = None
        self.iterates: list[list[np.ndarray]] = []

    def __repr__(self) -> str:
        return f"RecordRounds({self.strategy!r})"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, Any]]:
        if self.initial is None:
            self.initial = [a.copy() for a in parameters_to_ndarrays(parameters)]
        return self.strategy.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results: list[Any],
                      failures: list[Any]) -> tuple[Parameters | None, dict[str, Scalar]]:
        aggregated, metrics = self.strategy.aggregate_fit(server_round, results, failures)
        if aggregated is not None:
            self.iterates.append([a.copy() for a in parameters_to_ndarrays(aggregated)])
        return aggregated, metrics

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager) -> list[tuple[ClientProxy, Any]]:
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int, results: list[Any],
                           failures: list[Any]) -> tuple[float | None, dict[str, Scalar]]:
        return self.strategy.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int,
                 parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return self.strategy.evaluate(server_round, parameters)
