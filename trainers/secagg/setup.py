"""A secure-aggregation round's setup, agreed before any message: the configuration (field width,
threshold, SecAgg+ neighbourhood degree), the neighbour graph (everyone for Bonawitz et al. 2017; a
random k-regular graph of degree O(log n) for SecAgg+, Bell et al. 2020), the Shamir threshold per
neighbourhood, and the abort raised when too few clients remain to unmask."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privbench.errors import PrivbenchError


class SecAggAbort(PrivbenchError):
    """The round could not complete securely (too many dropouts); no sum and no input revealed."""


@dataclass(frozen=True)
class SecAggConfig:
    """Public parameters of one secure-aggregation round."""

    length: int  # entries of each input vector
    threshold_fraction: float = 0.6  # t = ceil(fraction * neighbourhood size), at least 2
    neighbours: int = 0  # 0: complete graph (SecAgg); k > 0: k-regular graph (SecAgg+)
    modulus_bits: int = 32  # inputs and sum live in Z / 2^m
    round_tag: bytes = b"round-0"  # binds keys and ciphertexts to this round
    graph_seed: int = 0  # public randomness for the SecAgg+ neighbour graph

    @property
    def modulus_mask(self) -> np.uint32:
        """2^modulus_bits - 1 as uint32: reduces a sum modulo the ring."""
        return np.uint32((1 << self.modulus_bits) - 1)


def neighbour_graph(ids: list[int], k: int, seed: int) -> dict[int, list[int]]:
    """Each client's neighbours: everyone (k = 0 or k >= n - 1) or a random k-regular Harary graph.

    SecAgg+ (Bell et al. 2020): clients sit on a ring in a public random order and pair with the
    k/2 nearest on each side, so the graph is k-regular and every client's cost is O(k).

    Args:
        ids: the clients; k: the neighbours each (odd k is raised by one); seed: the public order.
    """
    n = len(ids)
    if k <= 0 or k >= n - 1:
        return {u: [v for v in ids if v != u] for u in ids}
    if k % 2:
        k += 1
    order = [ids[i] for i in np.random.default_rng(seed).permutation(n)]
    pos = {u: i for i, u in enumerate(order)}
    return {u: sorted({order[(pos[u] + s) % n] for s in range(-k // 2, k // 2 + 1) if s})
            for u in ids}


def secagg_plus_degree(n: int) -> int:
    """A SecAgg+ neighbourhood size growing as log n: the smallest even k >= 3 log2 n (< n).

    Bell et al. (2020) show k = O(log n) suffices; the constant 3 is this package's choice, not
    their security parameterisation, so pick k from their bounds for a real deployment.
    """
    k = math.ceil(3 * math.log2(max(n, 2)))
    return min(n - 1, k + (k % 2))


def threshold_for(config: SecAggConfig, degree: int) -> int:
    """Shares needed to reconstruct one client's secrets, given its neighbourhood size.

    Args:
        config: the round (its threshold_fraction); degree: the client's neighbourhood size.
    """
    return min(degree, max(2, math.ceil(config.threshold_fraction * degree)))
