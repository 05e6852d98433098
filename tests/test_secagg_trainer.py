"""The [secagg] hook in the federated loop: the server sees only aggregates; the Claim follows
the realised distributed noise; a three-level run lists its guarantee per observer."""

from __future__ import annotations

import math

import pytest
import torch

from privbench.data import load_split
from privbench.errors import SpecError
from privbench.models import build_model
from privbench.partition import partition
from privbench.spec import DataSpec, ModelSpec, PrivacySpec, SecAggSpec, TrainSpec, validate_suite
from privbench.trainers import train_fedavg


def _train(privacy: PrivacySpec, secagg: SecAggSpec | None, cohort: float = 6, seed: int = 0):
    data_spec = DataSpec(clients=24)
    data = load_split(data_spec, seed)
    shards = partition(data_spec, data.y_train, seed)
    model = build_model(ModelSpec(hidden=[8]), data.n_features, data.n_classes, seed)
    train = TrainSpec(rounds=3, cohort=cohort, batch_size=8)
    return train_fedavg(model, data, shards, train, privacy, seed, secagg=secagg)


def test_secure_fedavg_matches_plain_fedavg_and_hides_client_updates():
    privacy = PrivacySpec(epsilon=math.inf, clip=100.0)
    plain = _train(privacy, None)
    secure = _train(privacy, SecAggSpec(enabled=True, bits=20))
    for name, p in plain.observations.final_params.items():
        torch.testing.assert_close(secure.observations.final_params[name], p, atol=2e-3, rtol=0)
    exposed = secure.observations.exposed
    assert "aggregates" in exposed and not secure.observations.exposes("client_updates")
    rounds = [h for h in secure.history if "secagg_upload_bytes" in h]
    assert rounds and all(h["secagg_upload_bytes"] > h["secagg_plain_bytes"] for h in rounds)
    assert all(h["secagg_contributors"] == h["cohort"] for h in rounds)


def test_distributed_dp_claim_uses_the_realised_noise_of_each_round():
    privacy = PrivacySpec(epsilon=8.0, clip=1.0)
    ddp = _train(privacy, SecAggSpec(enabled=True, distributed_dp=True, dropout_rate=0.2),
                 cohort=10)
    zs = [h["secagg_noise_multiplier"] for h in ddp.history if "secagg_noise_multiplier" in h]
    aborted = [h for h in ddp.history if "secagg_aborted" in h]
    assert zs and len(zs) + len(aborted) == 3 == ddp.claim.steps
    assert sum(h["secagg_dropped"] for h in ddp.history) > 0
    # each completed round's z comes from its contributors (an aborted round released
    # nothing and is accounted at the planned z, which this seed exercises)
    assert aborted
    planned, design = ddp.claim.noise_multiplier, math.ceil(0.6 * 10)
    for h in ddp.history:
        if "secagg_noise_multiplier" in h:
            assert h["secagg_noise_multiplier"] / planned == pytest.approx(
                math.sqrt((h["secagg_contributors"] - 1) / (design - 1)), rel=1e-3)
    assert ddp.claim.noise_multiplier <= min(zs)
    assert math.isfinite(ddp.claim.epsilon)
    assert ddp.claim.guarantee_against[0].startswith("the server (it sees only the secure sum")
    assert "already noised by the clients" in ddp.observations.exposed["aggregates"]


def test_three_level_training_lists_the_guarantee_per_observer():
    privacy = PrivacySpec(epsilon=8.0, clip=1.0)
    out = _train(privacy, SecAggSpec(enabled=True, distributed_dp=True, groups=3,
                                     aggregator_noise=0.3, threshold=0.5), cohort=12)
    lines = out.claim.guarantee_against
    agg = [g for g in lines if g.startswith("each intermediate aggregator")]
    server = [g for g in lines if g.startswith("the top-level server") and "epsilon" in g]
    assert agg and server
    eps = {g.split(":")[0]: float(g.split("epsilon ")[1].split(" ")[0]) for g in agg + server}
    assert eps[agg[0].split(":")[0]] > eps[server[0].split(":")[0]]
    assert "intermediate aggregator" in out.observations.exposed["aggregates"]


def test_secagg_spec_errors_name_the_field_and_the_fix():
    with pytest.raises(SpecError, match=r"secagg.bits = 31: must be below secagg.modulus_bits"):
        validate_suite({"secagg": {"enabled": True, "bits": 31, "modulus_bits": 31}}, "t.toml")
    with pytest.raises(SpecError, match=r"secagg.distributed_dp = true: needs a finite"):
        validate_suite({"privacy": {"epsilon": math.inf},
                        "secagg": {"distributed_dp": True}}, "t.toml")
