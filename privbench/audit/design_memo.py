"""The white-box audit's design work, remembered: pure functions of (design, mechanism, seed).

Choosing the f-DP bound's guess counts (`fdp.design_guesses`) and stating a design's power
(`power.design_power`) simulate the claimed mechanism only: they read no canary of the run, so
they depend on the claim's white-box model (steps, variances, sampling rate), the claimed family,
the canary count, the estimator with its alpha and the seed, and on nothing a run trains. Every
cell of the same privacy setting asks for them again; here they are computed once and kept in
privbench/privacy/accounting_cache.py (memory and the content-addressed disk cache, keyed with
the code stamp, which covers the modules these simulations run through).

The guess design draws from the audit's generator, which the bound then goes on drawing from:
the remembered value holds the generator's state after the design too, and a cached answer sets
it, so the bound's draws (and every figure) are those of a run that computed the design.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from privbench.audit.family import MechanismFamily
from privbench.audit.fdp import design_guesses
from privbench.audit.gauss_sum import WhiteBoxModel
from privbench.audit.power import POWER, SIMULATIONS, Refutes, design_power
from privbench.privacy import accounting_cache


def model_key(model: WhiteBoxModel) -> list:
    """The claim's white-box model, JSON-ready (what every simulation of it depends on)."""
    return [np.asarray(model.steps, np.float64).tolist(),
            np.asarray(model.variances, np.float64).tolist(), float(model.sampling_rate)]


def remembered_guesses(m: int, model: WhiteBoxModel, simulate: Callable, family: MechanismFamily,
                       alpha: float, rng: np.random.Generator) -> tuple[int, int]:
    """`fdp.design_guesses(m, simulate, family, alpha, rng)`, computed once per design.

    Args:
        m: the canary count; model: the claim's white-box model that `simulate` draws from.
        simulate: (bits, rng) -> scores of canaries simulated from `model` (the claim).
        family: the claimed family; alpha: the bound's confidence level.
        rng: the audit's generator; left in the state `design_guesses` leaves it in.

    Returns:
        (k+, k-), as `design_guesses` gives them.
    """
    key = [m, model_key(model), family.key(), alpha, rng.bit_generator.state]

    def compute() -> list:
        k_plus, k_minus = design_guesses(m, simulate, family, alpha, rng)
        return [k_plus, k_minus, rng.bit_generator.state]

    k_plus, k_minus, state = accounting_cache.memo("design_guesses", key, compute)
    rng.bit_generator.state = state
    return int(k_plus), int(k_minus)


def remembered_power(model: WhiteBoxModel, family: MechanismFamily, m: int, refutes: Refutes,
                     verdict: list, *, seed: int) -> dict[str, float]:
    """`power.design_power(model, family, m, refutes, seed=seed)`, computed once per design.

    Args:
        model, family, m, refutes, seed: as for `design_power`.
        verdict: JSON-ready description of what `refutes` decides from (the estimator's name,
            alpha and its guess counts): with the model, family, m and seed, everything the
            power depends on.

    Returns:
        The power's figures, as `design_power` gives them.
    """
    key = [model_key(model), family.key(), m, verdict, seed, SIMULATIONS, POWER]
    return accounting_cache.memo("design_power", key,
                                 lambda: design_power(model, family, m, refutes, seed=seed))
