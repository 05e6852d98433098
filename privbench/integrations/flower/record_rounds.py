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

from privbench.integrations.flower.wrapper import WrapperStrategy


class RecordRounds(WrapperStrategy):
    """Delegates everything to `strategy`; records the initial and every round's global model.

    Args:
        strategy: the strategy whose global models are recorded.
    """

    def __init__(self, strategy: Strategy) -> None:
        super().__init__(strategy)
        self.initial: list[np.ndarray] | None = None
        self.iterates: list[list[np.ndarray]] = []

    def __repr__(self) -> str:
        return f"RecordRounds({self.strategy!r})"

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, Any]]:
        """Record the initial global model (first call only), then delegate.

        Args:
            server_round: Flower's round number; parameters: the global model;
            client_manager: Flower's.
        """
        if self.initial is None:
            self.initial = [a.copy() for a in parameters_to_ndarrays(parameters)]
        return self.strategy.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results: list[Any],
                      failures: list[Any]) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Delegate, then record the new global model (when one was aggregated) in `iterates`.

        Args:
            server_round: Flower's round number; results, failures: the round's fit outcomes.
        """
        aggregated, metrics = self.strategy.aggregate_fit(server_round, results, failures)
        if aggregated is not None:
            self.iterates.append([a.copy() for a in parameters_to_ndarrays(aggregated)])
        return aggregated, metrics
