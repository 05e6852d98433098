"""Which candidate messages each shadow LM holds (numpy only, so the spec checks can call it).

Shadow k's client c leaves out as many of c's candidates as the target's split held out, in
consecutive windows of a random order of them (a fresh order once one is used up), so each
shadow's data are drawn as the target's were and every candidate is left out of about the same
number of shadows, K x held-out / candidates (exactly, when that is a whole number).
"""

from __future__ import annotations

import numpy as np

SHADOW_SEED = 0x5AD0


def shadow_inclusion(client: np.ndarray, member: np.ndarray, models: int,
                     seed: int) -> np.ndarray:
    """(K, N) bits: which of the N candidates shadow k trains on.

    Args:
        client: each candidate's client; member: whether the target trained on it (only the
            number held out per client is read, never which).
        models: K; seed: the spec's seed.
    Returns:
        (K, N) bool.
    """
    rng = np.random.default_rng([seed, SHADOW_SEED])
    inclusion = np.ones((models, len(client)), dtype=bool)
    for c in np.unique(client):
        idx = np.flatnonzero(client == c)
        held = int((~member[idx]).sum())
        order, pos = rng.permutation(len(idx)), 0
        for k in range(models):
            if pos + held > len(idx):
                order, pos = rng.permutation(len(idx)), 0
            inclusion[k, idx[order[pos:pos + held]]] = False
            pos += held
    return inclusion


def inclusion_problem(inclusion: np.ndarray, leave_one_out: bool = True) -> str | None:
    """A one-line problem when some candidate lacks an IN or an OUT shadow (with one shadow
    left out, as the pooled evaluation leaves each in turn); None when every one has both."""
    models = inclusion.shape[0]
    n_in = inclusion.sum(axis=0)
    low = 2 if leave_one_out else 1
    bad = np.flatnonzero((n_in < low) | (models - n_in < low))
    if not len(bad):
        return None
    side = "IN" if n_in[bad[0]] < low else "OUT of"
    return (f"attacks.shadows.models = {models}: candidate message {int(bad[0])} is {side} "
            f"fewer than {low} shadows; LiRA and RMIA need each message IN some shadows and OUT "
            "of others (with one left out), so raise attacks.shadows.models")


def generated_inclusion_problem(clients: int, messages: int, held: int, models: int,
                                seed: int) -> str | None:
    """`inclusion_problem` of generated data: `clients` clients of `messages` candidates each,
    `held` of them held out (the draws depend only on these counts and the seed)."""
    client = np.repeat(np.arange(clients), messages)
    member = np.tile(np.arange(messages) >= held, clients)
    return inclusion_problem(shadow_inclusion(client, member, models, seed))
