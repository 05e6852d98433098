"""One-run f-DP auditing (Mahloujifar, Melis and Chaudhuri, ICML 2025).

The same one-run game as Steinke et al. (m canaries with inclusion probability 1/2; "in" guessed
for the k+ highest scores, "out" for the k- lowest, abstain otherwise), analysed against the
trade-off curve f of the hypothesised mechanism instead of (eps, delta) randomised response.
Their bound: if the mechanism is f-DP, c' guesses get c or more right with probability below tau
whenever the extremal sequence

    h_c = tau' (c' - c) / c',  r_c = tau' c / c',  tau' = tau c' / m,
    h_i = max(h_{i+1}, B^-1(r_{i+1})),  r_i = r_{i+1} + i / (c' - i) (h_i - h_{i+1}),

ends with r_0 + h_0 > c' / m, where B^-1(y) is the smallest false-positive rate of a test with
power y under f (privbench.audit.family.MechanismFamily.curve). Rejection at tau = alpha
rules the member out. The family is the claimed event with its noise scaled by s; eps_LB is the
epsilon of the least private member ruled out (a grid of s, found by bisection).

The guess counts are designed before the bits are read, by simulating the claimed mechanism's
white-box model (privbench.audit.gauss_sum.WhiteBoxModel), so every canary certifies.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from privbench.audit.estimators import EpsilonBound
from privbench.audit.family import MechanismFamily
from privbench.audit.one_run_bound import correct_guesses
from privbench.privacy import accounting_cache

# Noise scales searched: s = 2^(k / 32) for k in this range (0.01 to 8), a grid, so the family's
# curves are computed once per member however many bounds ask for them.
S_STEPS = 32
K_RANGE = (-213, 96)
BRACKET_STEP = 8  # first step of the bracketing search, in grid steps (s x 2^(1/4))
# The design compares guess counts on every 4th scale (s within 2^(1/8), 9%): fewer PLD tables,
# and the bound itself still searches the full grid.
DESIGN_RESOLUTION = 4
DESIGN_PLD_GRID = 4e-3  # the design's trade-off curves: a coarser pessimistic PLD (4x cheaper)


def fdp_rejects(m: int, guesses: int, correct: int, alpha: float,
                inverse_power: Callable[[float], float]) -> bool:
    """True when an f-DP mechanism gets `correct` of `guesses` right with probability < alpha
    (Mahloujifar et al. 2025, Algorithm "rh with cap", alphabet of 2); `inverse_power` is the
    mechanism's B^-1 for one float (`MechanismFamily.curve`)."""
    if correct <= 0 or guesses <= 0:
        return False
    tau = alpha * guesses / m
    r = tau * correct / guesses
    h = tau * (guesses - correct) / guesses
    for i in range(correct - 1, -1, -1):
        h_next = max(h, inverse_power(r))
        r = r + i / (guesses - i) * (h_next - h)
        h = h_next
    return r + h > guesses / m


def fdp_noise_scale(m: int, guesses: int, correct: int, alpha: float,
                    family: MechanismFamily, resolution: int = 1) -> float:
    """The smallest noise scale s = 2^(k/32) on the grid found ruled out, inf if even the
    largest is consistent.

    The rejection is monotone in s, so the answer is the smallest rejected k: bracketed from
    k = 0 (the claim, s = 1) by steps of 8, 16, 32, ... up or down, then refined by bisection
    inside the bracket. The same k as a bisection over the whole grid, at the few scales near
    the answer (each scale's trade-off curve is a PLD table: the cost). `resolution` > 1 searches
    only the k that are its multiples (a coarser answer, never below the fine one, at fewer
    tables: for designing, not for the bound)."""

    return accounting_cache.memo(  # a pure function of the family and the counts
        "fdp_noise_scale", [family.key(), m, guesses, correct, alpha, resolution, S_STEPS,
                            list(K_RANGE), BRACKET_STEP],
        lambda: _fdp_noise_scale(m, guesses, correct, alpha, family, resolution))


def _fdp_noise_scale(m: int, guesses: int, correct: int, alpha: float,
                     family: MechanismFamily, resolution: int) -> float:
    def rejected(u: int) -> bool:
        s = 2.0 ** (u * resolution / S_STEPS)
        return fdp_rejects(m, guesses, correct, alpha, family.curve(s))

    lo, hi = K_RANGE
    if family.s_floor > 0:  # members below the floor are evaluated at it: never search there
        lo = max(lo, math.floor(S_STEPS * math.log2(family.s_floor)))
    lo, hi = -(-lo // resolution), hi // resolution  # in units of `resolution` grid steps
    first = max(1, BRACKET_STEP // resolution)
    start = min(max(0, lo), hi)
    if rejected(start):  # search down: the smallest rejected k is at most start
        top, step = start, first
        while True:
            u = max(lo, top - step)
            if not rejected(u):
                bottom = u
                break
            if u == lo:
                return 2.0 ** (lo * resolution / S_STEPS)
            top, step = u, 2 * step
    else:  # search up: the smallest rejected k is above start
        bottom, step = start, first
        while True:
            u = min(hi, bottom + step)
            if rejected(u):
                top = u
                break
            if u == hi:
                return math.inf
            bottom, step = u, 2 * step
    while top - bottom > 1:  # rejected at top, not at bottom
        mid = (bottom + top) // 2
        if rejected(mid):
            top = mid
        else:
            bottom = mid
    return 2.0 ** (top * resolution / S_STEPS)


def fdp_one_run_bound(scores: np.ndarray, bits: np.ndarray, family: MechanismFamily, *,
                      k_plus: int, k_minus: int, alpha: float = 0.05,
                      claimed: float | None = None,
                      rng: np.random.Generator | None = None) -> EpsilonBound:
    """eps_LB from the f-DP analysis of guesses on the k+ highest and k- lowest scores, with the
    guess counts fixed in advance. `claimed` caps eps_LB when the claim itself is not ruled out
    (the family's coarser PLD grid must not turn a consistent run into a FAIL)."""
    scores = np.asarray(scores, np.float64)
    bits = np.asarray(bits, bool)
    m = len(scores)
    rng = rng if rng is not None else np.random.default_rng(0)
    pairs = np.array([[k_plus, k_minus]])
    correct = int(correct_guesses(scores, bits, pairs, rng.random(m))[0])
    guesses = k_plus + k_minus
    s_star = fdp_noise_scale(m, guesses, correct, alpha, family)
    eps = 0.0 if math.isinf(s_star) else family.epsilon(s_star)
    if claimed is not None and s_star >= 1.0:
        eps = min(eps, claimed)
    s_all = fdp_noise_scale(m, guesses, guesses, alpha, family)
    ceiling = 0.0 if math.isinf(s_all) else family.epsilon(s_all)
    return EpsilonBound(
        method="one-run f-DP", eps_lb=float(eps), ceiling=float(ceiling), alpha=alpha, n=m,
        delta=family.delta,
        details={"k_plus": k_plus, "k_minus": k_minus, "guesses": guesses, "correct": correct,
                 "noise_scale_ruled_out": s_star, "m_canaries": m,
                 "selection": "guess counts designed on the claimed mechanism",
                 "family": "Gaussian DP" if family.gaussian
                 else "the claimed event with scaled noise (PLD)"})


def design_guesses(m: int, simulate, family: MechanismFamily, alpha: float,
                   rng: np.random.Generator, trials: int = 4) -> tuple[int, int]:
    """(k+, k-) with the best median eps_LB on canaries simulated from the claimed mechanism
    (a trial that rules nothing out counts as the worst outcome; noise scales compared at
    DESIGN_RESOLUTION grid steps against curves on DESIGN_PLD_GRID, ties to the fewer guesses).

    `simulate(bits, rng)` returns scores of canaries with those bits under the claim. Reads no
    real canary, so every canary certifies.
    """
    family = family.coarser(DESIGN_PLD_GRID)
    grid = np.unique(np.round(np.geomspace(max(4, m // 50), m, 9)).astype(int))
    sims = []
    for _ in range(trials):
        bits = rng.random(m) < 0.5
        sims.append((simulate(bits, rng), bits))
    best, best_eps = (int(grid[0] // 2), int(grid[0] - grid[0] // 2)), -math.inf
    for g in grid:
        kp, km = int(g // 2), int(g - g // 2)
        pairs = np.array([[kp, km]])
        counts = [int(correct_guesses(scores, bits, pairs, rng.random(m))[0])
                  for scores, bits in sims]
        # -log s of the smallest s ruled out (-inf when none is) is non-decreasing in the count
        # of correct guesses, so the median over trials needs the middle counts' scales only.
        middle = sorted(counts)[(trials - 1) // 2:trials // 2 + 1]
        scales = {c: fdp_noise_scale(m, kp + km, c, alpha, family, DESIGN_RESOLUTION)
                  for c in set(middle)}
        eps = [-math.log(scales[c]) for c in middle]  # larger = a less private member refuted
        if np.median(eps) > best_eps:
            best, best_eps = (kp, km), float(np.median(eps))
    return best
