"""The shadow LMs' candidates: as many non-members as members, each IN half of the shadows."""

from __future__ import annotations

import numpy as np

from privbench.data.shadow_inclusion import population_count, shadow_inclusion
from privbench.data.text_clients import load_text_data, population_messages
from privbench.spec.lm_schema import LMSpec
from privbench.spec.schema import DataSpec


def test_with_as_many_non_members_as_members_each_candidate_is_in_half_of_the_shadows():
    """The shadow design: every shadow's client holds as many candidates as the target trained
    on, and once the population brings the non-members up to the members, each candidate is IN
    exactly half of the shadows (consecutive windows of one order are complementary)."""
    members, held = np.array([9, 6, 4]), np.array([3, 2, 4])
    fresh = np.array([population_count(m, h) for m, h in zip(members, held, strict=True)])
    assert list(fresh) == [6, 4, 0]
    client = np.repeat(np.arange(3), members + held + fresh)
    member = np.concatenate([np.arange(m + h + f) < m
                             for m, h, f in zip(members, held, fresh, strict=True)])
    inc = shadow_inclusion(client, member, 8, seed=5)
    assert (inc.sum(axis=0) == 4).all()
    for c, m in enumerate(members):
        assert (inc[:, client == c].sum(axis=1) == m).all()


def test_population_messages_are_fresh_messages_of_each_generated_client():
    """Written from each client's own profile on a stream of their own: the cell's data are the
    same with or without them, the same seed writes the same ones, and a user's folder has none."""
    data, lm = DataSpec(name="support_messages", clients=4), LMSpec(messages_per_client=6)
    before = load_text_data(data, lm, seed=7).fingerprint()
    texts, clients, labels = population_messages(data, lm, 7, np.array([2, 0, 3, 1]))
    assert list(clients) == [0, 0, 2, 2, 2, 3] and len(labels) == len(texts) == 6
    again = population_messages(data, lm, 7, np.array([2, 0, 3, 1]))
    assert again[0] == texts and load_text_data(data, lm, seed=7).fingerprint() == before
    real = load_text_data(data, lm, seed=7)
    for text, c in zip(texts, clients, strict=True):
        name = real.train_texts[int(np.flatnonzero(real.train_clients == c)[0])].rsplit(", ", 1)[1]
        assert text.endswith(name)  # signed with the client's own name
    assert population_messages(DataSpec(name="jsonl", path="/x", clients=4), lm, 7,
                               np.array([1, 1, 1, 1])) is None
