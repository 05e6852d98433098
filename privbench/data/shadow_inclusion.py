"""Which candidate messages each shadow LM holds (numpy only, so the spec checks can call it).

Shadow k's client c leaves out as many of c's candidates as the target did not train on, in
consecutive windows of a random order of them (a fresh order once one is used up), so each
shadow trains on as many of c's messages as the target did and every candidate is left out of
about the same number of shadows, K x non-members / candidates (exactly, when that is a whole
number).

The candidates of a client are its members, its held-out messages and, where the data can
write more (generated clients), `population_count` fresh messages of the same client, so that
there are as many non-members as members: then every candidate is IN exactly half of the shadows
(consecutive windows of one order are complementary pairs), Carlini et al. 2022's design, and
each shadow still holds the target's number of messages. Without the population (a quarter held
out, as in the llm suite), each message was OUT of two shadows of eight, one once the attacked
model is left out, and LiRA and RMIA calibrated on one OUT model lost to LOSS at FPR 1e-3 (TPR
0.005 and 0.004 against 0.010 with 540 pooled non-members).
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


def population_count(members: int, held: int) -> int:
    """Fresh messages a client's candidates need so that its non-members (held out and fresh)
    are as many as its members (none when the held-out ones already are)."""
    return max(0, members - held)


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
    """`inclusion_problem` of generated data: `clients` clients of `messages` messages each,
    `held` of them held out, and their fresh population messages (`population_count`); the
    draws depend only on these counts and the seed."""
    per_client = messages + population_count(messages - held, held)
    client = np.repeat(np.arange(clients), per_client)
    member = np.tile(np.arange(per_client) >= per_client - (messages - held), clients)
    return inclusion_problem(shadow_inclusion(client, member, models, seed))
