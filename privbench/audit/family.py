"""The claimed mechanism as a one-parameter family: the executed DpEvent with its noise scaled.

A white-box one-run audit tests the hypothesis "the trainer ran the claimed mechanism with noise
multipliers s times those claimed" for every s, and reports eps(s_UB), the epsilon of the most
private member it cannot rule out. s = 1 is the claim itself, so eps_LB exceeds the claimed
epsilon exactly when the audit rules the claim out (at confidence 1 - alpha). Using the claimed
event's own trade-off curve, not a Gaussian-DP fit to it, keeps the bound valid for Poisson-
subsampled Gaussians, whose trade-off curve is not Gaussian (a GDP fit can exceed their epsilon).

- every step an unsampled Gaussian: the event is mu-GDP with mu = sqrt(sum 1 / z_i^2) / s, and
  epsilon and the trade-off curve are closed form;
- otherwise: dp_accounting's PLD of the scaled event gives delta(eps) (pessimistic, so every
  curve derived from it is dominated by the true one: tests against it stay valid).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from dataclasses import dataclass, field

import attr
import dp_accounting
import numpy as np
from dp_accounting import pld
from scipy import special

from privbench.audit.gaussians import gdp_epsilon
from privbench.privacy import accounting_cache
from privbench.privacy.accounting import NEIGHBOURING
from privbench.privacy.dp_events import event_to_dict
from privbench.privacy.pld_compose import PLDComposer, self_compose_pld
from privbench.privacy.pld_gaussian import gaussian_pld

# PLD grid of the family's curves: coarser than a claim's (1e-4) for speed; pessimistic either way.
FAMILY_PLD_GRID = 1e-3
# Epsilons on which delta(eps) is tabulated for the trade-off curve of a sampled event.
EPS_TABLE = np.concatenate([np.linspace(0.0, 4.0, 81), np.linspace(4.1, 30.0, 120)])
# e^-eps and e^eps on the table: the trade-off curve's line slopes, the same at every noise scale
# (computed once, not in each of the f-DP recursion's thousands of scalar calls)
EXP_MINUS_EPS, EXP_EPS = np.exp(-EPS_TABLE), np.exp(EPS_TABLE)


def scale_noise(event: dp_accounting.DpEvent, s: float) -> dp_accounting.DpEvent:
    """The event with every Gaussian's noise multiplier times s (the rest unchanged)."""
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return dp_accounting.GaussianDpEvent(event.noise_multiplier * s)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return dp_accounting.ComposedDpEvent([scale_noise(e, s) for e in event.events])
    if attr.has(type(event)) and hasattr(event, "event"):
        return attr.evolve(event, event=scale_noise(event.event, s))
    return event


MIN_MULTIPLIER = 0.25


def min_noise_multiplier(event: dp_accounting.DpEvent) -> float:
    """The smallest Gaussian noise multiplier inside the event (inf when there is none)."""
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return event.noise_multiplier if event.noise_multiplier > 0 else math.inf
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return min((min_noise_multiplier(e) for e in event.events), default=math.inf)
    if attr.has(type(event)) and hasattr(event, "event"):
        return min_noise_multiplier(event.event)
    return math.inf


def unsampled_gaussian_mu(event: dp_accounting.DpEvent) -> float | None:
    """mu of a composition of unsampled Gaussians (sqrt(sum 1 / z^2)), None for anything else."""
    if isinstance(event, dp_accounting.GaussianDpEvent):
        z = event.noise_multiplier
        return math.inf if z <= 0 else 1.0 / z
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        mu = unsampled_gaussian_mu(event.event)
        return None if mu is None else mu * math.sqrt(event.count)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        mus = [unsampled_gaussian_mu(e) for e in event.events]
        if any(m is None for m in mus):
            return None
        return math.sqrt(sum(m * m for m in mus))  # type: ignore[operator]
    if isinstance(event, dp_accounting.NoOpDpEvent):
        return 0.0
    return None


@dataclass
class MechanismFamily:
    """The claimed event with its noise scaled by s: epsilon(s) and the trade-off curve's inverse
    power (the smallest false-positive rate of any test with power y against member s)."""

    event: dp_accounting.DpEvent
    delta: float
    neighbouring: str = "add_or_remove_one"
    mu: float | None = None  # set when the event is mu-GDP (every step an unsampled Gaussian)
    grid: float = FAMILY_PLD_GRID  # PLD grid of the trade-off curves (pessimistic at any grid)
    _deltas: dict[float, np.ndarray] = field(default_factory=dict, repr=False)
    _curves: dict[float, TradeOffCurve] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, event: dp_accounting.DpEvent, delta: float,
           neighbouring: str = "add_or_remove_one") -> MechanismFamily:
        return cls(event, delta, neighbouring, unsampled_gaussian_mu(event))

    def key(self) -> list:
        """What the family's curves depend on, JSON-ready: a key of
        privbench.privacy.accounting_cache
        for values computed from them."""
        return [event_to_dict(self.event), self.delta, self.neighbouring, self.mu, self.grid,
                EPS_TABLE.tolist()]

    def coarser(self, grid: float) -> MechanismFamily:
        """The same family with trade-off curves from a PLD on `grid` (pessimistic, so every
        test against them stays valid, only less sharp; cheaper tables for designing)."""
        return MechanismFamily(self.event, self.delta, self.neighbouring, self.mu,
                               max(grid, self.grid))

    @functools.cached_property  # asked at every evaluation: the event is walked once
    def s_floor(self) -> float:
        """The smallest noise scale the family evaluates: the weakest Gaussian's multiplier
        times s stays at least 0.25 (below that the PLD is huge; eps there is beyond any
        audit). A bound at a larger s than found is still valid (eps falls as s grows)."""
        if self.mu is not None:
            return 0.0
        return MIN_MULTIPLIER / min_noise_multiplier(self.event)

    @property
    def gaussian(self) -> bool:
        """True when the event is mu-GDP: its trade-off curve is Gaussian."""
        return self.mu is not None

    def epsilon(self, s: float) -> float:
        """Epsilon at the family's delta of the member with noise times s, never above the exact
        value (closed form, or an optimistic PLD): what a lower bound may report."""
        if s <= 0:
            return math.inf
        if self.mu is not None:
            return float(gdp_epsilon(self.mu / s, self.delta))
        return _pld_epsilon(self.event, max(s, self.s_floor), self.delta, self.neighbouring)

    def epsilon_upper(self, s: float) -> float:
        """An upper estimate of epsilon(s): the pessimistic PLD on a coarse grid (fast). For
        statements where erring high is the honest side, such as the power's eps_caught."""
        if s <= 0:
            return math.inf
        if self.mu is not None:
            return float(gdp_epsilon(self.mu / s, self.delta))
        scale = float(max(s, self.s_floor))  # the exact scale: the same value cached or not

        def compute() -> float:
            loss = pessimistic_pld(scale_noise(self.event, scale), self.neighbouring, UPPER_GRID)
            return float(loss.get_epsilon_for_delta(self.delta))

        return accounting_cache.memo("family_upper", [event_to_dict(self.event), scale,
                                                      self.delta, self.neighbouring, UPPER_GRID],
                                     compute)

    def _delta_table(self, s: float) -> np.ndarray:
        s = max(s, self.s_floor)
        if s not in self._deltas:
            def compute() -> list[float]:
                loss = pessimistic_pld(scale_noise(self.event, s), self.neighbouring, self.grid)
                return pld_deltas(loss, EPS_TABLE).tolist()

            self._deltas[s] = np.asarray(accounting_cache.memo(
                "family_deltas", [event_to_dict(self.event), s, self.delta, self.neighbouring,
                                  self.grid, EPS_TABLE.tolist()], compute), np.float64)
        return self._deltas[s]

    def curve(self, s: float) -> TradeOffCurve | functools.partial:
        """y -> B^-1(y) of member s for one float y: `inverse_power(y, s)` to the last bit, at
        a few microseconds a call (the f-DP recursion makes thousands of scalar calls)."""
        if self.mu is not None:
            return functools.partial(_gaussian_inverse_power, self.mu / s)
        s = max(s, self.s_floor)
        if s not in self._curves:
            self._curves[s] = TradeOffCurve.of(self._delta_table(s))
        return self._curves[s]

    def inverse_power(self, y: np.ndarray, s: float) -> np.ndarray:
        """B^-1(y) = min false-positive rate of a test with power y against member s.

        Gaussian: Phi(Phi^-1(y) - mu / s). Otherwise from the (eps, delta(eps)) profile:
        max over eps of (y - delta(eps)) e^-eps and 1 - delta(eps) - e^eps (1 - y) (Dong, Roth
        and Su 2022, Prop. 2.12), over a finite grid of eps, so never above the true value.
        """
        y = np.clip(np.asarray(y, np.float64), 0.0, 1.0)
        if self.mu is not None:
            with np.errstate(divide="ignore"):
                return special.ndtr(special.ndtri(y) - self.mu / s)
        d = self._delta_table(s)
        a = (y[..., None] - d) * EXP_MINUS_EPS
        b = 1.0 - d - EXP_EPS * (1.0 - y[..., None])
        return np.clip(np.maximum(a, b).max(axis=-1), 0.0, 1.0)


def _gaussian_inverse_power(mu: float, y: float) -> float:
    """Phi(Phi^-1(y) - mu), the mu-GDP trade-off curve's inverse power, for one float."""
    y = min(max(y, 0.0), 1.0)
    with np.errstate(divide="ignore"):
        return float(special.ndtr(special.ndtri(y) - mu))


@dataclass(frozen=True)
class TradeOffCurve:
    """B^-1 of one sampled member, read from its delta table as `inverse_power` reads it, for
    scalar calls: the max over the table of the lines (y - d) e^-eps and 1 - d - e^eps (1 - y)
    is convex and piecewise linear, so the upper envelope of those lines is built once
    (a convex-hull pass over them sorted by slope) and a call finds its line by bisection and
    evaluates it, with its two neighbours, by the same formula: the same value to the last bit,
    without a 400-line numpy pass per call."""

    breaks: list[float]  # y where envelope line i + 1 takes over from line i
    # each envelope line's forms (is the e^-eps form, d, its exp): at eps = 0 both forms have
    # slope 1 and are the same line, but may round apart, so both are kept
    lines: list[list[tuple[bool, float, float]]]

    @classmethod
    def of(cls, deltas: np.ndarray) -> TradeOffCurve:
        """The envelope of the lines of a delta table on EPS_TABLE."""
        d = np.asarray(deltas, np.float64)
        slope = np.concatenate([EXP_MINUS_EPS, EXP_EPS])
        intercept = np.concatenate([-d * EXP_MINUS_EPS, 1.0 - d - EXP_EPS])
        forms = [(True, float(dk), float(e)) for dk, e in zip(d, EXP_MINUS_EPS, strict=True)]
        forms += [(False, float(dk), float(e)) for dk, e in zip(d, EXP_EPS, strict=True)]
        order = np.lexsort((intercept, slope)).tolist()  # by slope, highest intercept last
        # Python floats: the same IEEE double arithmetic as numpy's scalars, 10x cheaper a call
        slopes, intercepts = slope.tolist(), intercept.tolist()

        def meet(a: int, b: int) -> float:
            """y where line b (the steeper: the hull's slopes strictly increase) meets a."""
            return (intercepts[a] - intercepts[b]) / (slopes[b] - slopes[a])

        hull: list[int] = []
        tied: dict[int, list[int]] = {}
        for i in order:
            tied[i] = [i]
            if hull and slopes[hull[-1]] == slopes[i]:  # the same slope: keep the higher line
                tied[i] += tied[hull.pop()]  # with the other form, for rounding
            while len(hull) >= 2 and meet(hull[-2], i) <= meet(hull[-2], hull[-1]):
                hull.pop()  # the top line is nowhere above both neighbours
            hull.append(i)
        breaks = [meet(a, b) for a, b in itertools.pairwise(hull)]
        return cls(breaks, [[forms[j] for j in tied[i]] for i in hull])

    def __call__(self, y: float) -> float:
        y = min(max(float(y), 0.0), 1.0)
        i = bisect.bisect_left(self.breaks, y)
        best = -math.inf
        for line in self.lines[max(0, i - 1):i + 2]:
            for a_form, d, e in line:
                best = max(best, (y - d) * e if a_form else 1.0 - d - e * (1.0 - y))
        return min(max(best, 0.0), 1.0)


def _pmf_deltas(pmf, epsilons: np.ndarray) -> np.ndarray:
    """delta(eps) of one PLD pmf at every eps (ascending): dp_accounting's hockey-stick sums
    inf + sum_{l > eps} p_l - e^eps sum_{l > eps} p_l e^-l, accumulated from the largest loss
    down in the same order, as suffix sums (one pass instead of a Python loop)."""
    if hasattr(pmf, "_probs"):  # dense
        probs = np.asarray(pmf._probs, np.float64)
        losses = (np.arange(probs.size) + pmf._lower_loss) * pmf._discretization
    else:
        losses, probs = (np.asarray(v, np.float64) for v in pmf._get_losses_probs())
    upper = np.cumsum(np.concatenate([[pmf._infinity_mass], probs[::-1]]))
    lower = np.cumsum(np.concatenate([[0.0], (probs * np.exp(-losses))[::-1]]))
    above = losses.size - np.searchsorted(losses, epsilons, side="right")  # losses > eps
    return upper[above] - np.exp(epsilons) * lower[above]


def pld_deltas(loss, epsilons: np.ndarray) -> np.ndarray:
    """delta(eps) of a PrivacyLossDistribution at every eps (ascending), as its
    get_delta_for_epsilon computes it (the larger of the remove and add pmfs')."""
    deltas = _pmf_deltas(loss._pmf_remove, epsilons)
    if not loss._symmetric:
        deltas = np.maximum(deltas, _pmf_deltas(loss._pmf_add, epsilons))
    return deltas


# Grid of the optimistic PLD behind a reported eps(s) (about 2% under the exact value at 140
# sampled steps): optimistic discretisation under-estimates, so a lower bound stays one.
OPTIMISTIC_GRID = 1e-3
UPPER_GRID = 1e-2  # pessimistic grid of epsilon_upper


FAMILY_KINDS = ("family_epsilon", "family_upper", "family_deltas")


def clear_caches() -> None:
    """Forget the epsilons and delta tables held in memory (benchmarks time a fresh cell; the
    disk cache of privbench/privacy/accounting_cache.py stays)."""
    accounting_cache.clear_memory(*FAMILY_KINDS)


def pessimistic_pld(event: dp_accounting.DpEvent, neighbouring: str, grid: float):
    """The PLD dp_accounting's PLD accountant composes for `event` on `grid` (pessimistic):
    built by the project's composer (privbench.privacy.pld_compose: the same PLD to the last
    bit, its one-step PLDs built in numpy, 1.5-3x faster), or by the accountant itself for an
    event outside the Gaussian family."""
    if PLDComposer.supports(event, neighbouring):
        composed = PLDComposer(neighbouring, grid).compose(event)
        if not composed.nonprivate:  # (the accountant's own PLD says "infinite" for it)
            return composed._pld
    acc = pld.PLDAccountant(NEIGHBOURING[neighbouring], value_discretization_interval=grid)
    return acc.compose(event)._pld


def _optimistic_pld(event: dp_accounting.DpEvent, neighbouring: str):
    """An optimistic PLD of Gaussian, Poisson-sampled Gaussian and their compositions (its
    epsilon never exceeds the exact one), or None for any other event."""
    relation = NEIGHBOURING[neighbouring]
    if isinstance(event, dp_accounting.GaussianDpEvent):
        inner, q = event, 1.0
    elif isinstance(event, dp_accounting.PoissonSampledDpEvent) and isinstance(
            event.event, dp_accounting.GaussianDpEvent):
        inner, q = event.event, event.sampling_probability
    elif isinstance(event, dp_accounting.SelfComposedDpEvent):
        base = _optimistic_pld(event.event, neighbouring)
        return None if base is None else self_compose_pld(base, event.count)
    elif isinstance(event, dp_accounting.ComposedDpEvent):
        parts = [_optimistic_pld(e, neighbouring) for e in event.events]
        if not parts or any(p is None for p in parts):
            return None
        out = parts[0]
        for p in parts[1:]:
            out = out.compose(p)
        return out
    else:
        return None
    # dp_accounting's from_gaussian_mechanism(pessimistic_estimate=False, use_connect_dots=False)
    return gaussian_pld(inner.noise_multiplier, q, relation, OPTIMISTIC_GRID, pessimistic=False)


def _pld_epsilon(event: dp_accounting.DpEvent, s: float, delta: float,
                 neighbouring: str) -> float:
    """Epsilon of the scaled event, memoised: from an optimistic PLD where one exists (a lower
    estimate: what a lower bound may report), else from the pessimistic accountant."""
    def compute() -> float:
        scaled = scale_noise(event, s)
        loss = _optimistic_pld(scaled, neighbouring)
        if loss is None:
            loss = pessimistic_pld(scaled, neighbouring, FAMILY_PLD_GRID)
        get = getattr(loss, "get_epsilon_for_delta", None) or loss.get_epsilon
        return float(get(delta))

    return accounting_cache.memo("family_epsilon", [event_to_dict(event), float(s),
                                                    delta, neighbouring, OPTIMISTIC_GRID,
                                                    FAMILY_PLD_GRID], compute)
