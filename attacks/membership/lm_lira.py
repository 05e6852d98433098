"""LiRA and RMIA on sequences, from the token log-probabilities of the attacked and shadow LMs.

The signal is each sequence's mean token log-likelihood phi (minus its LOSS). Each candidate's
reference models are given by a mask `use` (K, N) over the shadows (see `balanced_references`):
- LiRA online (Carlini et al. 2022): log N(phi; mu_in, s) - log N(phi; mu_out, s), the means per
  candidate over the IN and OUT references, one shared (global) variance: the fixed-variance
  variant Carlini et al. recommend when the shadows are few.
- LiRA offline: how far phi lies above the OUT references' mean, in units of their global
  spread (the z-score of the one-sided test Pr[Z_out <= phi]).
- RMIA (Zarifzadeh et al. 2024): Pr(x | model) = exp(phi), the geometric-mean token probability,
  over its mean across the references (offline: the OUT ones, corrected with `offline_a`); with
  gamma above 1 ranked pairwise against the candidates as population z.
Scores are higher for "member".
"""

from __future__ import annotations

import numpy as np

from privbench.attacks.membership.rmia import rmia

MIN_STD = 1e-3


def sequence_logp(logp: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean token log-likelihood of each sequence: (..., N) from (..., N, T)."""
    return (logp * mask).sum(axis=-1) / np.maximum(mask.sum(axis=-1), 1.0)


def balanced_references(inclusion: np.ndarray, attacked: int | None,
                        rng: np.random.Generator) -> np.ndarray:
    """(K, N) which shadows are each candidate's references when model `attacked` is attacked.

    Every candidate keeps all but one of the shadows that held it and all but one of those that
    did not (the attacked shadow among the dropped when it is one, the rest at random), so that
    what the references are never depends on the attacked model's membership bit: leaving out
    only the attacked shadow would give its members one OUT reference more than its
    non-members, a difference an attack could read instead of the model.

    Args:
        inclusion: (K, N) which candidates each shadow trained on.
        attacked: the attacked shadow's row (None: the released model, which is no shadow).
        rng: the stream of the random drops.
    Returns:
        (K, N) bool.
    """
    inclusion = np.asarray(inclusion, dtype=bool)
    use = np.ones(inclusion.shape, dtype=bool)
    if attacked is not None:
        use[attacked] = False
    for x in range(inclusion.shape[1]):
        sides = (True, False) if attacked is None else (not inclusion[attacked, x],)
        for side in sides:
            pick = np.flatnonzero(use[:, x] & (inclusion[:, x] == side))
            use[rng.choice(pick), x] = False
    return use


def _means(phi_s: np.ndarray, inc: np.ndarray, use: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-candidate IN and OUT means of phi over the references, and the global IN and OUT
    standard deviations around them."""
    ins, outs = inc & use, ~inc & use
    if np.any(ins.sum(axis=0) == 0) or np.any(outs.sum(axis=0) == 0):
        raise ValueError("LiRA: a candidate has no IN or no OUT reference model; train more "
                         "shadows (attacks.shadows.models)")
    mu_in = np.where(ins, phi_s, 0.0).sum(axis=0) / ins.sum(axis=0)
    mu_out = np.where(outs, phi_s, 0.0).sum(axis=0) / outs.sum(axis=0)
    n = phi_s.shape[1]
    r_in = (np.where(ins, phi_s - mu_in, 0.0) ** 2).sum()
    r_out = (np.where(outs, phi_s - mu_out, 0.0) ** 2).sum()
    s_in = np.sqrt(r_in / max(int(ins.sum()) - n, 1))
    s_out = np.sqrt(r_out / max(int(outs.sum()) - n, 1))
    return mu_in, mu_out, max(s_in, MIN_STD), max(s_out, MIN_STD)


def lira_online(phi: np.ndarray, phi_s: np.ndarray, inc: np.ndarray,
                use: np.ndarray) -> np.ndarray:
    """Online LiRA, one shared variance: (N,) scores from phi (N,), references' phi (K, N)."""
    mu_in, mu_out, s_in, s_out = _means(phi_s, np.asarray(inc, bool), use)
    s = np.sqrt((s_in ** 2 + s_out ** 2) / 2)
    return ((phi - mu_out) ** 2 - (phi - mu_in) ** 2) / (2 * s ** 2)


def lira_offline(phi: np.ndarray, phi_s: np.ndarray, inc: np.ndarray,
                 use: np.ndarray) -> np.ndarray:
    """Offline LiRA (OUT references only, global spread): (phi - mu_out) / s_out, the z-score
    whose normal CDF is Pr[Z_out <= phi] (the same order, without the CDF's saturation at 1,
    which would tie the clearest members)."""
    _, mu_out, _, s_out = _means(phi_s, np.asarray(inc, bool), use)
    return (phi - mu_out) / s_out


def lm_rmia(phi: np.ndarray, phi_s: np.ndarray, inc: np.ndarray, use: np.ndarray, *,
            gamma: float = 1.0, offline_a: float | None = None) -> np.ndarray:
    """RMIA on Pr(x | model) = exp(phi) against the references' mean (offline: OUT only).

    With gamma = 1 the pairwise score (the fraction of population z with LR(z) < LR(x)) is a
    monotone function of LR(x) for one model, so the score is log LR(x) itself: the same order,
    and on one scale across models, so that the pooled evaluation can compare them. With gamma
    above 1 it is the pairwise fraction against the candidates as population z.
    """
    refs = use if offline_a is None else use & ~np.asarray(inc, bool)
    if np.any(refs.sum(axis=0) == 0):
        raise ValueError("RMIA: a candidate has no reference model; train more shadows")
    p_ref = np.where(refs, np.exp(phi_s), 0.0).sum(axis=0) / refs.sum(axis=0)
    marg = p_ref if offline_a is None else 0.5 * ((1 + offline_a) * p_ref + (1 - offline_a))
    if gamma == 1.0:
        return phi - np.log(np.maximum(marg, 1e-300))
    p = np.exp(phi)
    return rmia(p, marg, p, marg, gamma=gamma)
