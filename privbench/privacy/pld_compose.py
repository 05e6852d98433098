"""Incremental PLD composition: dp_accounting's PLD accountant, round by round, at the same cost
at round 1,000 as at round 1.

`PLDComposer` composes exactly as `pld.PLDAccountant` does (the same PLDs, built by the same
calls, in the same order, so the same epsilon to the last bit) with four changes of speed only:
each distinct mechanism's PLD is built once per process; composing a cached one-round PLD onto a
running composition reuses that PMF's FFT; the truncation of the tails, a Python loop over
every entry in dp_accounting, runs in numpy with the same sums; and a self-composition's
Chernoff truncation bounds (40 logsumexp calls in dp_accounting) take a few numpy passes.
Reading epsilon can also run in numpy (`vectorised=True`, within 1e-15 of dp_accounting's
reading). It reads the PMFs' fields as dp_accounting's own code does (dp_accounting is pinned
in constraints.txt).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import dp_accounting
import numpy as np
from dp_accounting import pld, privacy_accountant
from dp_accounting.pld import pld_pmf
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from scipy import fft as sp_fft
from scipy import special

from privbench.privacy import accounting_cache
from privbench.privacy.pld_gaussian import gaussian_pld

NEIGHBOURING = {
    "add_or_remove_one": dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
    "replace_one": dp_accounting.NeighboringRelation.REPLACE_ONE,
}


class PLDComposer:
    """dp_accounting's PLD accountant, incremental and with cached one-event PLDs.

    It composes exactly as `pld.PLDAccountant` does (the same PLDs, built by the same calls, in
    the same order, so the same epsilon to the last bit), but the PLD of each distinct
    mechanism is built once per process (`_mechanism_pld`; building one is most of the cost:
    50 ms to 2 s at the 1e-4 grid), and composing one more round onto a running composition
    costs one convolution, not a rebuild of every round so far.

    Args:
        neighbouring: "add_or_remove_one" or "replace_one".
        grid: the PLD's value discretisation interval (pessimistic).
    """

    def __init__(self, neighbouring: str, grid: float) -> None:
        self.neighbouring = neighbouring
        self.grid = grid
        self.nonprivate = False
        self._pld = pld_lib.identity(value_discretization_interval=grid)

    @staticmethod
    def supports(event: dp_accounting.DpEvent, neighbouring: str) -> bool:
        """Whether the PLD accountant can compose `event` under `neighbouring`.

        Args:
            event: a DpEvent; neighbouring: "add_or_remove_one" or "replace_one".
        """
        return _pld_supports(event, neighbouring)

    def copy(self) -> PLDComposer:
        """A composer holding the same composition (PLDs are immutable, so this is cheap)."""
        out = PLDComposer(self.neighbouring, self.grid)
        out.nonprivate, out._pld = self.nonprivate, self._pld
        return out

    def compose(self, event: dp_accounting.DpEvent, count: int = 1) -> PLDComposer:
        """Compose `event` (`count` times) onto the composition; returns self.

        Args:
            event: a DpEvent (Gaussian, Poisson-sampled Gaussian, or compositions of these);
            count: how many times.
        Raises:
            privacy_accountant.UnsupportedEventError: an event the PLD accountant refuses.
        """
        if isinstance(event, dp_accounting.NoOpDpEvent):
            return self
        if isinstance(event, dp_accounting.NonPrivateDpEvent):
            self.nonprivate = True
        elif isinstance(event, dp_accounting.SelfComposedDpEvent):
            self.compose(event.event, event.count * count)
        elif isinstance(event, dp_accounting.ComposedDpEvent):
            for e in event.events:
                self.compose(e, count)
        elif isinstance(event, dp_accounting.GaussianDpEvent):
            if event.noise_multiplier == 0:
                self.nonprivate = True
            else:
                self._pld = _compose(self._pld, _mechanism_pld(
                    event.noise_multiplier / math.sqrt(count), None, self.neighbouring,
                    self.grid))
        elif (isinstance(event, dp_accounting.PoissonSampledDpEvent)
              and isinstance(event.event, dp_accounting.GaussianDpEvent)):
            if event.sampling_probability == 0:
                return self
            if event.event.noise_multiplier == 0:
                self.nonprivate = True
            else:
                self._pld = _compose(self._pld, _subsampled_pld(
                    event.event.noise_multiplier, event.sampling_probability,
                    self.neighbouring, self.grid, count))
        else:
            raise privacy_accountant.UnsupportedEventError(
                f"the PLD accountant does not compose {type(event).__name__} here")
        return self

    def epsilon(self, delta: float, vectorised: bool = False) -> float:
        """Epsilon at `delta` of the composition so far (inf after a non-private event).

        Args:
            delta: the target delta.
            vectorised: read it with numpy (`_vectorised_epsilon`) instead of dp_accounting's
                Python loop over the distribution: the same sums in the same order, equal to
                within 1e-15 relative (numpy's exp may differ from math.exp in the last bit),
                and its cost does not grow with the distribution as rounds compose.
        """
        if self.nonprivate:
            return math.inf
        if not vectorised:
            return float(self._pld.get_epsilon_for_delta(delta))
        pmfs = [self._pld._pmf_remove, self._pld._pmf_add]
        return max(_vectorised_epsilon(pmf, delta) for pmf in pmfs)


def _compose(a: pld_lib.PrivacyLossDistribution, b: pld_lib.PrivacyLossDistribution,
             tail_mass_truncation: float = 1e-15) -> pld_lib.PrivacyLossDistribution:
    """`a.compose(b)` (dp_accounting, same default truncation) with the tails of dense PMFs
    truncated by numpy: the same convolution and the same cumulative sums, so the same PLD,
    without a Python loop over every truncated entry (milliseconds a round for wide PLDs)."""
    remove = _compose_pmfs(a._pmf_remove, b._pmf_remove, tail_mass_truncation)
    if a._symmetric and b._symmetric:
        return pld_lib.PrivacyLossDistribution(remove)
    add = _compose_pmfs(a._pmf_add, b._pmf_add, tail_mass_truncation)
    return pld_lib.PrivacyLossDistribution(remove, add)


def _compose_pmfs(p: Any, q: Any, tail_mass_truncation: float) -> Any:
    """`pld_pmf.compose_pmfs`, with `DensePLDPmf.compose`'s tail truncation vectorised."""
    if (isinstance(p, pld_pmf.SparsePLDPmf) and isinstance(q, pld_pmf.SparsePLDPmf)
            and p.size * q.size <= pld_pmf._MAX_PMF_SPARSE_SIZE):
        return p.compose(q, tail_mass_truncation)
    p, q = p.to_dense_pmf(), q.to_dense_pmf()
    p.validate_composable(q)
    probs = _fft_convolve(p._probs, q)
    infinity_mass = (p._infinity_mass + q._infinity_mass
                     - p._infinity_mass * q._infinity_mass)
    offset, probs, right_tail = _truncate_tails(probs, tail_mass_truncation,
                                                p._pessimistic_estimate)
    return pld_pmf.DensePLDPmf(p._discretization, p._lower_loss + q._lower_loss + offset, probs,
                               infinity_mass + right_tail, p._pessimistic_estimate)


_SPECTRA: dict[tuple[int, int], tuple[Any, np.ndarray]] = {}


def _fft_convolve(a: np.ndarray, pmf: Any) -> np.ndarray:
    """`scipy.signal.fftconvolve(a, pmf._probs)`, the same transforms of the same length, with
    the spectrum of `pmf` (a cached one-round PMF, composed every round) computed once."""
    b = pmf._probs
    if len(a) == 1 or len(b) == 1:  # scipy multiplies directly along a length-1 axis
        return a * b
    full = len(a) + len(b) - 1
    n = sp_fft.next_fast_len(full, True)
    key = (id(pmf), n)
    if key not in _SPECTRA:
        if len(_SPECTRA) >= 64:
            _SPECTRA.clear()
        _SPECTRA[key] = (pmf, sp_fft.rfft(b, n))  # holding pmf keeps its id unique
    return sp_fft.irfft(sp_fft.rfft(a, n) * _SPECTRA[key][1], n)[:full].copy()


def _truncate_tails(probs: np.ndarray, tail_mass_truncation: float,
                    pessimistic: bool) -> tuple[int, np.ndarray, float]:
    """`pld_pmf._truncate_tails`: the longest prefix and suffix each summing to at most half
    the truncation (running sums as the library's loop adds them), moved to the ends."""
    if tail_mass_truncation == 0:
        return 0, probs, 0

    def prefix(arr: np.ndarray) -> int:
        for end in (256, len(arr)):  # tails are short: look at the first entries first
            over = np.cumsum(arr[:end]) > tail_mass_truncation / 2
            if over.any():
                return int(np.argmax(over))
        return len(arr)

    left_idx = prefix(probs)
    right_idx = max(len(probs) - prefix(np.flip(probs)), left_idx + 1)
    left_mass = np.sum(probs[:left_idx])
    right_mass = np.sum(probs[right_idx:])
    truncated = probs[left_idx:right_idx]
    if pessimistic:
        truncated[0] += left_mass
        return left_idx, truncated, right_mass
    truncated[-1] += right_mass
    return left_idx, truncated, 0


def _vectorised_epsilon(pmf: Any, delta: float) -> float:
    """dp_accounting's `pld_pmf._get_epsilon_for_delta` for a dense PMF, with numpy.

    The loop walks the losses from the largest down, summing the upper mass and the lower mass
    (prob * exp(-loss)), and stops at the first loss that the epsilon of the masses so far
    reaches; here the running sums are cumulative sums (the same additions in the same order)
    and the stop is the first index where the condition holds.
    """
    if not isinstance(pmf, pld_pmf.DensePLDPmf):
        return float(pmf.get_epsilon_for_delta(delta))
    inf_mass = pmf._infinity_mass  # the PMF's own fields, read as dp_accounting reads them
    if inf_mass > delta:
        return math.inf
    flipped = np.flip(pmf._probs)
    d, top = pmf._discretization, (pmf._lower_loss + len(flipped) - 1) * pmf._discretization
    for end in (2048, len(flipped)):  # the largest losses first: epsilon is usually among them
        found = _epsilon_among(inf_mass, flipped[:end], d, top, delta, final=end >= len(flipped))
        if found is not None:
            return found
    raise AssertionError("unreachable: the whole PMF always decides")


def _epsilon_among(inf_mass: float, probs: np.ndarray, d: float, top: float, delta: float,
                   final: bool) -> float | None:
    """The loop of `_get_epsilon_for_delta` over the first `len(probs)` (largest) losses: its
    result, or None when the loop would go on past them (and `final` is False)."""
    n = len(probs)
    steps = np.full(n, -d)
    steps[0] = top  # losses as itertools.count(top, -d) yields them
    losses = np.cumsum(steps)
    upper = np.cumsum(np.concatenate(([inf_mass], probs)))
    lower = np.cumsum(np.concatenate(([0.0], np.exp(-losses) * probs)))
    with np.errstate(divide="ignore", invalid="ignore"):
        stop = ((upper[:n] > delta) & (lower[:n] > 0)
                & (np.log((upper[:n] - delta) / lower[:n]) >= losses))
    underflow = (upper[1:] >= delta) & (lower[1:] == 0)  # exp(-loss) was 0: a huge loss
    k_stop = int(np.argmax(stop)) if stop.any() else n
    k_under = int(np.argmax(underflow)) if underflow.any() else n
    if k_under < k_stop:
        return max(0.0, float(losses[k_under]))
    if k_stop == n and not final:
        return None
    mass_upper, mass_lower = float(upper[k_stop]), float(lower[k_stop])
    if mass_upper <= mass_lower + delta:
        return 0.0
    return math.log((mass_upper - delta) / mass_lower)


def _pld_supports(event: dp_accounting.DpEvent, neighbouring: str) -> bool:
    """dp_accounting's PLD accountant supports it, and it is of the Gaussian family composed
    here (every event privbench executes is)."""
    return pld.PLDAccountant(NEIGHBOURING[neighbouring]).supports(event) and _gaussian_family(
        event)


def _gaussian_family(event: dp_accounting.DpEvent) -> bool:
    if isinstance(event, (dp_accounting.NoOpDpEvent, dp_accounting.NonPrivateDpEvent,
                          dp_accounting.GaussianDpEvent)):
        return True
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return _gaussian_family(event.event)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return all(_gaussian_family(e) for e in event.events)
    return (isinstance(event, dp_accounting.PoissonSampledDpEvent)
            and isinstance(event.event, dp_accounting.GaussianDpEvent))


def _subsampled_pld(z: float, q: float, neighbouring: str, grid: float,
                    count: int) -> pld_lib.PrivacyLossDistribution:
    """`count` self-compositions of a Poisson-subsampled Gaussian's PLD, as the accountant
    composes them; one round's (count 1, itself costly to truncate) is cached."""
    if count == 1:
        return _one_subsampled_round(z, q, neighbouring, grid)
    return self_compose_pld(_mechanism_pld(z, q, neighbouring, grid), count)


@functools.lru_cache(maxsize=32)
def _one_subsampled_round(z: float, q: float, neighbouring: str,
                          grid: float) -> pld_lib.PrivacyLossDistribution:
    return self_compose_pld(_mechanism_pld(z, q, neighbouring, grid), 1)


def self_compose_pld(a: pld_lib.PrivacyLossDistribution, count: int,
                     tail_mass_truncation: float = 1e-15) -> pld_lib.PrivacyLossDistribution:
    """`a.self_compose(count)` (dp_accounting, same default truncation): the same PLD to the
    last bit, with the Chernoff truncation bounds of a dense PMF's self-convolution computed at
    its 40 orders in a few numpy passes instead of 40 calls of scipy's logsumexp (most of the
    cost of self-composing a PMF of a few thousand entries: 5-15x faster there).

    Args:
        a: a privacy loss distribution (pessimistic or optimistic).
        count: how many times to compose it with itself (at least 1).
        tail_mass_truncation: the tail mass the convolution may drop (dp_accounting's default).
    Returns:
        The composed privacy loss distribution.
    """
    remove = _self_compose_pmf(a._pmf_remove, count, tail_mass_truncation)
    if a._symmetric:
        return pld_lib.PrivacyLossDistribution(remove)
    add = _self_compose_pmf(a._pmf_add, count, tail_mass_truncation)
    return pld_lib.PrivacyLossDistribution(remove, add)


def _self_compose_pmf(pmf: Any, count: int, tail_mass_truncation: float) -> Any:
    """`DensePLDPmf.self_compose`: the same bounds, the same transforms, the same PMF."""
    if isinstance(pmf, pld_pmf.SparsePLDPmf) and count > 1 and (
            pmf.size ** count > pld_pmf._MAX_PMF_SPARSE_SIZE):
        pmf = pmf.to_dense_pmf()  # as SparsePLDPmf.self_compose goes dense
    if not isinstance(pmf, pld_pmf.DensePLDPmf) or count <= 0:
        return pmf.self_compose(count, tail_mass_truncation)
    lower, upper = _self_convolve_bounds(pmf._probs, count, tail_mass_truncation)
    # dp_accounting.pld.common.self_convolve, given its bounds
    output_len = upper - lower + 1
    fast_len = sp_fft.next_fast_len(max(output_len, len(pmf._probs)))
    convolved = np.real(sp_fft.ifft(sp_fft.fft(pmf._probs, fast_len) ** count))
    probs = np.array(np.roll(convolved, -lower)[:output_len])
    inf_prob = tail_mass_truncation - math.expm1(count * math.log1p(-pmf._infinity_mass))
    return pld_pmf.DensePLDPmf(pmf._discretization, pmf._lower_loss * count + lower, probs,
                               inf_prob, pmf._pessimistic_estimate)


_BOUNDS_BLOCK = 1 << 15  # entries of one logsumexp call in _self_convolve_bounds


def _self_convolve_bounds(probs: np.ndarray, count: int,
                          tail_mass_truncation: float) -> tuple[int, int]:
    """`dp_accounting.pld.common.compute_self_convolve_bounds` at its default orders: the
    log moment generating functions of the orders as row logsumexps over blocks of orders
    (the same products and row sums as its per-order calls), then the same Chernoff bounds."""
    n = len(probs)
    lower, upper = 0, (n - 1) * count
    if tail_mass_truncation == 0:
        return lower, upper
    orders = np.concatenate((np.arange(-20, 0), np.arange(1, 21))) / n
    rows = max(1, _BOUNDS_BLOCK // n)  # orders a call: a block that stays in cache
    log_mgfs = np.concatenate([
        special.logsumexp(np.arange(n)[None, :] * orders[i:i + rows, None], b=probs[None, :],
                          axis=1) for i in range(0, len(orders), rows)])
    for order, log_mgf in zip(orders.tolist(), log_mgfs.tolist(), strict=True):
        bound = (count * log_mgf + math.log(2 / tail_mass_truncation)) / order
        if not math.isfinite(bound):
            continue
        if order > 0:
            upper = min(upper, math.ceil(bound))
        else:
            lower = max(lower, math.floor(bound))
    return lower, upper


@functools.lru_cache(maxsize=32)
def _mechanism_pld(std: float, sampling_prob: float | None, neighbouring: str,
                   grid: float) -> pld_lib.PrivacyLossDistribution:
    """The PLD of one (Poisson-subsampled) Gaussian, the same as dp_accounting's PLD accountant
    builds (`pld_gaussian.gaussian_pld`: its loop in numpy), once per process (PLDs are
    immutable)."""
    return gaussian_pld(std, sampling_prob, NEIGHBOURING[neighbouring], grid)


accounting_cache.forgotten_with_memory(_mechanism_pld, _one_subsampled_round)
