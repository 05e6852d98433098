"""A user's Opacus accountant, re-accounted: its history of (noise, sample rate, steps) as a
dp_accounting event, the claim privbench derives from it, and the comparison with Opacus's own
epsilon."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import dp_accounting
import numpy as np

from privbench.audit.gradient_canaries import dirac_log_likelihood_ratio
from privbench.integrations.opacus_errors import OpacusAuditError
from privbench.privacy import accounting
from privbench.privacy.claim import Claim, claim_from_event

# Opacus's PRV accountant: the accuracy it is asked for (its get_epsilon default).
PRV_EPS_ERROR = 0.01


@dataclass(frozen=True)
class AccountingCheck:
    """privbench's PLD epsilon of the accountant's history beside Opacus's own figure."""

    mechanism: str  # Opacus accountant: prv, rdp or gdp
    opacus_epsilon: float
    pld_epsilon: float
    opacus_interval: tuple[float, float] | None  # PRV: [lower, upper] at its stated accuracy
    agrees: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        """The check as row details store it: both epsilons, the interval, agreement, note."""
        return {"opacus_accountant": self.mechanism, "opacus_epsilon": self.opacus_epsilon,
                "pld_epsilon": self.pld_epsilon,
                "opacus_interval": list(self.opacus_interval) if self.opacus_interval else None,
                "accountants_agree": self.agrees, "accounting_note": self.note}


def history_event(history: list[tuple[float, float, int]]) -> dp_accounting.DpEvent:
    """The DpEvent of an Opacus accountant's history: each (noise multiplier, sample rate,
    steps) entry is that many Poisson-subsampled Gaussian steps, composed in order."""
    parts = [accounting.poisson_gaussian_event(float(z), float(q), int(n))
             for z, q, n in history]
    if not parts:
        return dp_accounting.NoOpDpEvent()
    return parts[0] if len(parts) == 1 else dp_accounting.ComposedDpEvent(parts)


def reaccount(accountant: Any, delta: float, clip: float | None) -> tuple[Claim, AccountingCheck]:
    """The Claim of an Opacus accountant's history, accounted with PLD by privbench, and how it
    compares with the epsilon Opacus reports itself.

    Args:
        accountant: the user's `PrivacyEngine().accountant` (prv, rdp or gdp), after training.
        delta: the delta of the claim.
        clip: the per-sample clipping norm that ran (the DPOptimizer's max_grad_norm).

    Returns:
        (the Claim, the comparison with Opacus's epsilon).
    """
    history = [(float(z), float(q), int(n)) for z, q, n in getattr(accountant, "history", [])]
    if not history:
        raise OpacusAuditError("opacus audit: the PrivacyEngine accountant has no history: train "
                               "at least one step with the optimizer make_private returned")
    event = history_event(history)
    steps = sum(n for _, _, n in history)
    zs, qs = {z for z, _, _ in history}, {q for _, q, _ in history}
    mechanism = accountant.mechanism()
    claim = claim_from_event(
        event, delta=delta, target_epsilon=math.inf, unit="example",
        neighbouring="add_or_remove_one", sampling="poisson" if max(qs) < 1 else "none",
        noise_multiplier=min(zs), sampling_rate=max(qs), steps=steps, clip=clip,
        guarantee_against=["anyone who sees the trained model or any step's noised gradient"],
        notes=[f"re-accounted from Opacus's {mechanism} accountant history "
               f"({len(history)} segment(s), {steps} steps); Poisson sampling as Opacus assumes"])
    check = _compare(accountant, mechanism, history, delta, claim.epsilon,
                     steps * (claim.pld_grid or 0.0))
    claim.notes.append(check.note)
    return claim, check


def _compare(accountant: Any, mechanism: str, history: list[tuple[float, float, int]],
             delta: float, pld_eps: float, pld_slack: float) -> AccountingCheck:
    """Opacus's own epsilon beside the PLD one; for PRV, the interval it guarantees."""
    opacus_eps = float(accountant.get_epsilon(delta))
    interval = None
    if mechanism == "prv":
        # Opacus reports the upper end of [lower, upper], which holds the true epsilon at its
        # stated accuracy (eps_error, delta_error = delta / 1000).
        dprv = accountant._get_dprv(eps_error=PRV_EPS_ERROR, delta_error=delta / 1000)
        lower, _, upper = dprv.compute_epsilon(delta, delta / 1000, PRV_EPS_ERROR)
        interval = (float(lower), float(upper))
        # PLD is pessimistic: at most one grid step of privacy loss above the truth per step.
        agrees = interval[0] - 1e-9 <= pld_eps <= interval[1] + pld_slack
        note = (f"PLD epsilon {pld_eps:.4f}; Opacus PRV {opacus_eps:.4f}, true epsilon in "
                f"[{lower:.4f}, {upper:.4f}] at eps_error {PRV_EPS_ERROR}: "
                + ("agree" if agrees else f"DISAGREE by {pld_eps - opacus_eps:+.4f}"))
    elif mechanism == "rdp":
        agrees = pld_eps <= opacus_eps + pld_slack
        note = (f"PLD epsilon {pld_eps:.4f}; Opacus RDP {opacus_eps:.4f} (an upper bound, "
                f"looser by {opacus_eps - pld_eps:+.4f})"
                + ("" if agrees else ": DISAGREE, PLD above the RDP bound"))
    else:
        agrees = abs(pld_eps - opacus_eps) <= 0.05 * max(pld_eps, 1.0)
        note = (f"PLD epsilon {pld_eps:.4f}; Opacus {mechanism} {opacus_eps:.4f} (an "
                f"approximation, differs by {opacus_eps - pld_eps:+.4f})")
    return AccountingCheck(mechanism, opacus_eps, pld_eps, interval, agrees, note)


def dirac_scores(observed: list[np.ndarray], seen: np.ndarray, bits: np.ndarray,
                 history: list[tuple[float, float, int]], clip: float, canary_norm: float,
                 n_natural: int, details: dict[str, Any]) -> np.ndarray:
    """Log-likelihood ratios of each gradient canary under the claimed mechanism.

    Args:
        observed: the noised gradient sum on every canary's coordinate, one array (m,) a step.
        seen: how often each canary was in a batch.
        bits: each canary's inclusion bit.
        history: the accountant's (noise multiplier, sample rate, steps).
        clip: Opacus's clipping norm C; canary_norm: a canary's norm over C.
        n_natural: records in the user's data set.
        details: the audit row's details (the canaries' mean sampling is added).

    Returns:
        One score per canary (higher: more likely included).
    """
    m = len(bits)
    steps = sum(n for _, _, n in history)
    if len(observed) != steps:
        raise OpacusAuditError(
            f"opacus audit: the accountant counted {steps} steps but the audit saw "
            f"{len(observed)}: call watch() right after make_private, before training")
    if bits.any() and seen[bits].sum() == 0:
        raise OpacusAuditError(
            "opacus audit: no planted canary reached the model: train on the DataLoader "
            "make_private returned and feed its inputs to the model unchanged")
    sums = np.stack(observed, axis=1)  # (m, steps)
    signal = clip * min(1.0, canary_norm)
    # The sampling rate expected before the bits were drawn (scores must not read them):
    # the accountant's rate rescaled from the realised data size to N + m / 2.
    size = n_natural + int(bits.sum())
    expected = (n_natural + m / 2) / size
    total = np.zeros(m)
    start = 0
    for z, q, n in history:
        var = np.full(n, (z * clip) ** 2)
        total += dirac_log_likelihood_ratio(sums[:, start:start + n], np.ones(n), var,
                                            min(q / expected, 1.0), signal)
        start += n
    details["canary_sampled_mean"] = float(seen[bits].mean())
    return total
