"""The PLD of a (Poisson-subsampled) Gaussian mechanism, built as dp_accounting builds it, with
its one Python loop run by numpy.

`pld_lib.from_gaussian_mechanism` (connect-the-dots, pessimistic) spends ~90% of its time in
`get_delta_for_epsilon`, which calls `inverse_privacy_loss` once per grid point in Python
(tens of thousands of calls: ~0.2 s per PLD at the 1e-3 grid, ~2 s at 1e-4). For the ADD and
REMOVE adjacencies that inverse is a few elementwise operations: the same numpy ufuncs
(`np.log`, `np.exp`, `np.log1p`) and the same IEEE additions and products, in the same order, as
dp_accounting applies to each point (`common.log_a_times_exp_b_plus_c`, `_log_sub`, the
Gaussian's linear inverse), applied here to the whole array at once; so the PMF is the same to
the last bit (tests/privacy/test_pld_gaussian.py compares it with dp_accounting's). Points where the
library would raise, and the REPLACE adjacency, take the library's own loop.

The optimistic PLD (privacy buckets, `pessimistic_estimate=False, use_connect_dots=False`) has
the same kind of loop: one `inverse_privacy_loss` a bucket, from the lowest x up. Its bucket
values are computed as that loop computes them, then inverted in one numpy call, so the bucket
edges, their masses and the PMF are the same to the last bit (3x faster at the 1e-3 grid).
"""

from __future__ import annotations

import collections
import math
import numbers
from typing import Any

import numpy as np
from dp_accounting.pld import pld_pmf
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.pld import privacy_loss_mechanism as plm

Adjacency = plm.AdjacencyType


class _FastGaussianPrivacyLoss(plm.GaussianPrivacyLoss):
    """`GaussianPrivacyLoss` whose `get_delta_for_epsilon` inverts the privacy loss with numpy."""

    def _inverse_all(self, eps: np.ndarray) -> np.ndarray | None:
        """`[self.inverse_privacy_loss(e) for e in eps]` as an array, or None where the library
        would raise for some point (or for REPLACE): the caller then runs the library's loop."""
        q, s = self.sampling_prob, self.sensitivity
        sd2 = self._standard_deviation ** 2
        kind = self.adjacency_type
        if kind not in (Adjacency.ADD, Adjacency.REMOVE) or not np.all(np.isfinite(eps)):
            return None

        def without_remove(pl: Any) -> Any:  # _inverse_privacy_loss_without_subsampling_remove
            return -0.5 * s - pl * sd2 / s

        def without(pl: Any) -> Any:
            return s + without_remove(pl) if kind == Adjacency.ADD else without_remove(pl)

        if q == 1.0:
            return np.asarray(without(eps), dtype=float)
        if kind == Adjacency.ADD:
            threshold, b, edge = -math.log(1 - q), -eps, math.inf
            if np.any(eps > threshold) and not _all_close_where(eps, threshold, eps > threshold):
                return None
        else:
            threshold, b, edge = math.log(1 - q), eps, -math.inf
            if np.any(eps <= threshold) and not _all_close_where(eps, threshold,
                                                                 eps <= threshold):
                return None
        close = _isclose(eps, threshold)
        # common.log_a_times_exp_b_plus_c(a=1/q, b, c=1-1/q): a > 0 and c < 0 for 0 < q < 1
        a, c = 1 / q, 1 - 1 / q
        d = b + np.log(a)
        log_c = np.log(-c)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value = d + np.log1p(-np.exp(log_c - d))  # common._log_sub(d, log(-c))
        value = np.where(b == 0, np.log(a + c), value)
        bad = (b != 0) & (log_c >= d) & ~close  # _log_sub raises there
        if np.any(bad):
            return None
        pl = -value if kind == Adjacency.ADD else value
        out = np.asarray(without(pl), dtype=float)
        out[close] = without(edge)
        return out

    def get_delta_for_epsilon(self, epsilon: Any) -> Any:
        """`plm.AdditiveNoisePrivacyLoss.get_delta_for_epsilon`, the inverse run by numpy."""
        is_scalar = isinstance(epsilon, numbers.Number)
        epsilons = np.array([epsilon]) if is_scalar else np.asarray(epsilon)
        deltas = np.zeros_like(epsilons, dtype=float)
        if self.sampling_prob == 1.0 or self.adjacency_type == Adjacency.REPLACE:
            inverse_indices = np.full_like(epsilons, True, dtype=bool)
        elif self.adjacency_type == Adjacency.ADD:
            inverse_indices = epsilons < -math.log1p(-self.sampling_prob)
        else:
            inverse_indices = epsilons > math.log1p(-self.sampling_prob)
            other_indices = np.logical_not(inverse_indices)
            deltas[other_indices] = -np.expm1(epsilons[other_indices])
        x_cutoffs = self._inverse_all(epsilons[inverse_indices])
        if x_cutoffs is None:
            return super().get_delta_for_epsilon(epsilon)
        deltas[inverse_indices] = (
            self.mu_upper_cdf(x_cutoffs)
            - np.exp(epsilons[inverse_indices] + self.mu_lower_log_cdf(x_cutoffs)))
        deltas = np.clip(deltas, 0, 1)
        return float(deltas[0]) if is_scalar else deltas


def _isclose(x: np.ndarray, y: float) -> np.ndarray:
    """`math.isclose(x_i, y)` (rel_tol 1e-9, abs_tol 0) for every finite x_i."""
    diff = np.abs(y - x)
    return (x == y) | (diff <= np.abs(1e-9 * y)) | (diff <= np.abs(1e-9 * x))


def _all_close_where(x: np.ndarray, y: float, where: np.ndarray) -> bool:
    return bool(np.all(_isclose(x[where], y)))


def _privacy_buckets_pmf(loss: _FastGaussianPrivacyLoss, grid: float) -> Any:
    """`pld_lib._create_pld_pmf_from_monotone_privacy_loss(loss, pessimistic_estimate=False,
    value_discretization_interval=grid, use_connect_dots=False)`: the tail's rounded masses,
    then one bucket per rounded-down loss value r = first, first - 1, ... (x_r the inverse of
    grid * r, until grid * r reaches the upper tail's loss or an x is not below upper_x), its
    mass mu_upper_cdf(x_r) - mu_upper_cdf(x_{r+1}) added at floor(r + 0.5), in the library's
    order; the inverses in one numpy call. None where that call cannot stand in for the
    library's (the caller then runs the library)."""
    tail = loss.privacy_loss_tail()
    lower_x, upper_x = tail.lower_x_truncation, tail.upper_x_truncation
    masses: collections.defaultdict[int, float] = collections.defaultdict(lambda: 0)
    infinity_mass = tail.tail_probability_mass_function.get(math.inf, 0)
    for privacy_loss, mass in tail.tail_probability_mass_function.items():
        if privacy_loss != math.inf:
            masses[math.floor(privacy_loss / grid)] += mass
    first = math.floor(loss.privacy_loss(lower_x) / grid)
    upper_loss = loss.privacy_loss(upper_x)
    last = math.floor(upper_loss / grid)  # the loop's last r: the largest with grid r <= it
    while grid * last > upper_loss:
        last -= 1
    while grid * (last + 1) <= upper_loss:
        last += 1
    if not lower_x < upper_x or last >= first:
        return None
    rounded = np.arange(first, last - 1, -1, dtype=np.int64)  # first, ..., last
    inverses = loss._inverse_all(grid * rounded[:-1].astype(np.float64))
    if inverses is None:
        return None
    xs = [lower_x, *inverses.tolist(), upper_x]
    # the loop appends each x and stops at the first that is not below upper_x
    stop = next((i for i, x in enumerate(xs[1:], 1) if not x < upper_x), len(xs) - 1)
    xs = xs[:stop + 1]
    cdf = loss.mu_upper_cdf(xs)
    for r, mass in zip(rounded[:stop].tolist(), cdf[1:] - cdf[:-1], strict=True):
        masses[math.floor(r + 0.5)] += mass
    return pld_pmf.create_pmf(dict(masses), grid, infinity_mass, pessimistic_estimate=False)


def gaussian_pld(standard_deviation: float, sampling_prob: float | None, neighbouring: Any,
                 grid: float, pessimistic: bool = True) -> pld_lib.PrivacyLossDistribution:
    """`pld_lib.from_gaussian_mechanism(standard_deviation, value_discretization_interval=grid,
    neighboring_relation=neighbouring, sampling_prob=...)` (its other arguments at their
    defaults: connect the dots, pessimistic), or with `pessimistic` False its optimistic PLD
    (`pessimistic_estimate=False, use_connect_dots=False`: privacy buckets); the same PLD,
    built faster.

    Args:
        standard_deviation: the noise's standard deviation (sensitivity 1).
        sampling_prob: the Poisson sampling probability, or None for no sampling.
        neighbouring: a dp_accounting NeighboringRelation.
        grid: the value discretisation interval.
        pessimistic: the pessimistic PLD (an upper estimate of epsilon) or the optimistic one
            (a lower estimate).

    Returns:
        The privacy loss distribution.
    """
    q = 1.0 if sampling_prob is None else sampling_prob

    def single(adjacency: Adjacency) -> Any:
        loss = _FastGaussianPrivacyLoss(standard_deviation, pessimistic_estimate=pessimistic,
                                        sampling_prob=q, adjacency_type=adjacency)
        if not pessimistic:
            pmf = _privacy_buckets_pmf(loss, grid)
            if pmf is not None:
                return pmf
        return pld_lib._create_pld_pmf_from_monotone_privacy_loss(
            loss, pessimistic_estimate=pessimistic, value_discretization_interval=grid,
            use_connect_dots=pessimistic)

    relation = pld_lib.NeighborRel
    if neighbouring in (relation.ADD_OR_REMOVE_ONE, relation.REPLACE_SPECIAL):
        return pld_lib._pld_for_subsampled_mechanism(single, q)
    if neighbouring == relation.REPLACE_ONE:
        return pld_lib.PrivacyLossDistribution(single(Adjacency.REPLACE))
    raise ValueError(f"unsupported neighbouring relation: {neighbouring}")
