"""WrapperStrategy: the base of privbench's Flower strategy wrappers.

It delegates every call to the wrapped strategy, as Flower's own DP wrappers do, so a wrapper
(canary clients, round recording) overrides only the calls it changes.
"""

from __future__ import annotations

from typing import Any

from flwr.common import Parameters, Scalar
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy


class WrapperStrategy(Strategy):
    """Passes every Strategy call on to `strategy` unchanged.

    Args:
        strategy: the wrapped Flower strategy.
    """

    def __init__(self, strategy: Strategy) -> None:
        super().__init__()
        self.strategy = strategy

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """The wrapped strategy's initial parameters."""
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, Any]]:
        """The wrapped strategy's fit instructions.

        Args:
            server_round: Flower's round number; parameters: the global model;
            client_manager: Flower's.
        """
        return self.strategy.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results: list[Any],
                      failures: list[Any]) -> tuple[Parameters | None, dict[str, Scalar]]:
        """The wrapped strategy's aggregate.

        Args:
            server_round: Flower's round number; results, failures: the round's fit outcomes.
        """
        return self.strategy.aggregate_fit(server_round, results, failures)

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager) -> list[tuple[ClientProxy, Any]]:
        """The wrapped strategy's evaluation instructions.

        Args:
            server_round: Flower's round number; parameters: the global model;
            client_manager: Flower's.
        """
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int, results: list[Any],
                           failures: list[Any]) -> tuple[float | None, dict[str, Scalar]]:
        """The wrapped strategy's aggregated evaluation.

        Args:
            server_round: Flower's round number; results, failures: the round's evaluate outcomes.
        """
        return self.strategy.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int,
                 parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        """The wrapped strategy's server-side evaluation.

        Args:
            server_round: Flower's round number; parameters: the global model.
        """
        return self.strategy.evaluate(server_round, parameters)
