"""Hierarchical secure aggregation: clients -> intermediate aggregators -> server.

Each group of clients runs SecAgg(+) with its intermediate aggregator as the server, so the
aggregator learns only its group's (noised) sum. The aggregator may add its own discrete Gaussian
noise, then the aggregators run SecAgg(+) among themselves with the top server, which learns only
the total. Each observer is protected by the noise it did not add and cannot remove:

- an intermediate aggregator: the other contributing clients of its own group;
- the server: every contributing client (but the target) and every surviving aggregator;
- the public (the released model) and other clients: the same as the server, by post-processing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from privbench.rng import derived_seed
from privbench.trainers.secagg import ddp_accounting
from privbench.trainers.secagg.aggregate import SecureAggregator
from privbench.trainers.secagg.discrete_gaussian import sample_discrete_gaussian
from privbench.trainers.secagg.protocol import Dropouts, run_secure_sum
from privbench.trainers.secagg.setup import SecAggConfig

OBSERVERS = {
    "intermediate_aggregator": "each intermediate aggregator (sees its group's sum)",
    "server": "the top-level server (sees the sum of the group sums)",
    "public": "anyone querying or holding the released model, including other clients",
}


@dataclass
class HierarchyOutcome:
    """The decoded total, who contributed at each level, and each observer's realised z."""

    total: np.ndarray
    contributors: list[int]
    groups_contributing: list[int]
    group_contributors: dict[int, list[int]]
    noise_multipliers: dict[str, float]  # observer -> realised z_eff
    uploaded_bytes: dict[str, float] = field(default_factory=dict)  # level -> mean per sender
    plain_bytes: int = 0  # one client's plain quantised update


def run_hierarchical(aggregator: SecureAggregator, updates: np.ndarray, groups: list[list[int]],
                     round_index: int, rng: np.random.Generator, *,
                     aggregator_noise_multiplier: float = 0.0,
                     client_dropouts: dict[int, Dropouts] | None = None,
                     group_dropouts: Dropouts | None = None) -> HierarchyOutcome:
    """One round of three-level aggregation of `updates` rows, grouped by `groups` (row ids).

    Clients are summed securely within each group, each group's sum noised by its aggregator,
    then the group sums are summed securely at the top.

    Args:
        aggregator: encodes and decodes; updates: the flat updates (clients, length);
        groups: each group's row ids; round_index: the round; rng: the rounding and noise stream.
        aggregator_noise_multiplier: each group aggregator's own noise, times Delta.
        client_dropouts, group_dropouts: who goes silent in each group and at the top.
    Returns:
        The HierarchyOutcome: sum, contributors, and each observer's realised z.
    """
    enc = aggregator.encode(updates, round_index, rng)
    fp = enc.fixed_point
    sigma_c = enc.client_sigma
    sigma_a = aggregator_noise_multiplier * enc.sensitivity
    n = enc.noised.shape[0]
    fp.check_overflow(n, math.sqrt(n * sigma_c**2 + len(groups) * sigma_a**2))
    group_sums: dict[int, np.ndarray] = {}
    group_contributors: dict[int, list[int]] = {}
    uploads: list[int] = []
    for g, members in enumerate(groups):
        config = _level_config(enc.config, f"group-{g}", g)
        inputs = {u: fp.to_ring(enc.noised[u]) for u in members}
        drops = (client_dropouts or {}).get(g)
        result = run_secure_sum(inputs, config, drops)
        group_contributors[g] = result.contributors
        uploads += [result.uploaded[u] for u in result.contributors]
        signed = fp.from_ring(result.total)
        if sigma_a > 0:
            signed = signed + sample_discrete_gaussian(sigma_a, signed.size, rng)
        group_sums[g] = fp.to_ring(signed)
    top = run_secure_sum(group_sums, _level_config(enc.config, "top", len(groups)),
                         group_dropouts)
    total = aggregator.decode(fp.from_ring(top.total), enc)
    live_groups = top.contributors
    contributors = sorted(u for g in live_groups for u in group_contributors[g])
    d, delta = enc.config.length, enc.sensitivity
    z_groups = [ddp_accounting.realised_noise_multiplier(sigma_c, len(group_contributors[g]) - 1,
                                                         delta, d) for g in group_contributors]
    server_variances = [sigma_c**2] * (len(contributors) - 1) + [sigma_a**2] * len(live_groups)
    z_server = ddp_accounting.mixed_noise_multiplier(server_variances, delta, d)
    return HierarchyOutcome(
        total=total, contributors=contributors, groups_contributing=live_groups,
        group_contributors=group_contributors,
        noise_multipliers={"intermediate_aggregator": min(z_groups), "server": z_server,
                           "public": z_server},
        uploaded_bytes={"client": float(np.mean(uploads)),
                        "aggregator": float(np.mean([top.uploaded[g] for g in live_groups]))},
        plain_bytes=enc.plain_bytes)


def _level_config(base: SecAggConfig, tag: str, salt: int) -> SecAggConfig:
    return SecAggConfig(length=base.length, threshold_fraction=base.threshold_fraction,
                        neighbours=base.neighbours, modulus_bits=base.modulus_bits,
                        round_tag=base.round_tag + b"/" + tag.encode(),
                        graph_seed=derived_seed(base.graph_seed, salt))
