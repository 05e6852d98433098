"""CanaryClients: a Flower strategy wrapper whose canary clients join every round they are drawn.

Wrap it around the user's DP strategy (e.g. Flower's `DifferentialPrivacyServerSideFixedClipping`),
so that each canary's update passes through that strategy's own clipping, aggregation and noise
like any client's. A canary client is included in the federation with probability 1/2 (its
inclusion bit, drawn by `privbench.integrations.flower.FlowerAudit`); an included canary takes
part in a round with the rate at which the real clients were sampled in it, and sends the global
model plus its fixed random unit vector times `canary_norm * clip` (Andrew et al., ICLR 2024), with
the real clients' mean example count as its weight. Canary clients are not trained.

The DP wrapper's `num_sampled_clients` (the divisor of its noise) is raised to count the canary
clients taking part, so the noise relative to one client's clipped contribution is the one the
user configured for their real clients.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.common import (
    Code,
    FitRes,
    Parameters,
    Scalar,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from privbench.integrations.flower.wrapper import WrapperStrategy


class CanaryProxy(ClientProxy):
    """The stand-in proxy of a canary client: it has nothing to fetch, fit or evaluate."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self.cid} is a privbench canary client: it only sends its canary")

    get_properties = get_parameters = fit = evaluate = reconnect = _refuse


class CanaryClients(WrapperStrategy):
    """Adds the included canary clients' updates to each round's results, then delegates.

    Args:
        strategy: the user's strategy, normally a DP wrapper whose clipping and noise the
            canaries must pass through.
        bits: (m,) inclusion bits: canary j joins the federation when bits[j].
        norm: each canary update's L2 norm (canary_norm * clip: clipped to clip by the strategy).
        rng: draws the canary directions (once the model's size is known, in round 1) and which
            included canaries take part in each round.
    """

    def __init__(self, strategy: Strategy, bits: np.ndarray, norm: float,
                 rng: np.random.Generator) -> None:
        super().__init__(strategy)
        self.bits, self.norm, self.rng = np.asarray(bits, dtype=bool), norm, rng
        self.vectors: np.ndarray | None = None  # (m, d) unit rows, the flattened arrays' order
        self.current: list[np.ndarray] = []
        self.rates: list[float] = []  # per round: the real clients' sampled fraction
        self.base_sampled = getattr(strategy, "num_sampled_clients", None)
        self._available = 0
        self._sampled = 0

    def __repr__(self) -> str:
        return f"CanaryClients({self.strategy!r}, {int(self.bits.sum())} canary clients)"

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, Any]]:
        """Note the round's global model and sampled fraction, then delegate.

        The canary directions are drawn in round 1, once the model's size is known.

        Args:
            server_round: Flower's round number; parameters: the global model;
            client_manager: Flower's.
        Returns:
            The wrapped strategy's fit instructions.
        """
        self.current = parameters_to_ndarrays(parameters)
        if self.vectors is None:
            d = sum(a.size for a in self.current)
            vectors = self.rng.normal(size=(len(self.bits), d))
            self.vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        self._available = client_manager.num_available()
        instructions = self.strategy.configure_fit(server_round, parameters, client_manager)
        self._sampled = len(instructions)
        return instructions

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[Any]) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Add the included canaries that take part this round (each with probability the round's
        sampled fraction) to `results`, then let the wrapped strategy aggregate them all.

        Args:
            server_round: Flower's round number; results: the real clients' fit results;
            failures: the failed clients.
        Returns:
            The wrapped strategy's aggregate and metrics.
        """
        rate = self._sampled / max(self._available, 1)
        self.rates.append(rate)
        included = np.flatnonzero(self.bits)
        taking_part = included[self.rng.random(len(included)) < rate]
        weight = int(np.rint(np.mean([r.num_examples for _, r in results]))) if results else 1
        shapes = [a.shape for a in self.current]
        sizes = np.cumsum([0] + [a.size for a in self.current])
        canaries = []
        assert self.vectors is not None
        for j in taking_part:
            flat = self.vectors[j] * self.norm
            arrays = [(a + flat[sizes[i]:sizes[i + 1]].reshape(shapes[i])).astype(a.dtype)
                      for i, a in enumerate(self.current)]
            canaries.append((CanaryProxy(f"canary-{j}"),
                             FitRes(Status(Code.OK, "privbench canary"),
                                    ndarrays_to_parameters(arrays), weight, {})))
        if self.base_sampled is not None:
            # The DP wrapper divides its noise by the clients it expects: count the canaries.
            self.strategy.num_sampled_clients = self.base_sampled + len(canaries)
        return self.strategy.aggregate_fit(server_round, [*results, *canaries], failures)
