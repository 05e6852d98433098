"""The [secagg] hook in the federated loop: the server sees only aggregates; the Claim follows
the realised distributed noise; a three-level run lists its guarantee per observer."""

from __future__ import annotations

import math

import pytest
import torch

from privbench.data.partition import partition
from privbench.data.splits import load_split
from privbench.errors import SpecError
from privbench.models import build_model
from privbench.spec.load import validate_suite
from privbench.spec.schema import DataSpec, ModelSpec, PrivacySpec, SecAggSpec, TrainSpec
from privbench.trainers import tabular_inputs, train_fedavg


def _train(privacy: PrivacySpec, secagg: SecAggSpec | None, cohort: float = 6, seed: int = 0):
    data_spec = DataSpec(clients=24)
    data = load_split(data_spec, seed)
    shards = partition(data_spec, data.y_train, seed)
    model = build_model(ModelSpec(hidden=[8]), data.n_features, data.n_classes, seed)
    train = TrainSpec(rounds=3, cohort=cohort, batch_size=8)
    return train_fedavg(*tabular_inputs(model, data, shards), train, privacy, seed, secagg=secagg)


def test_secure_fedavg_matches_plain_fedavg_and_hides_client_updates():
    privacy = PrivacySpec(epsilon=math.inf, clip=100.0)
    plain = _train(privacy, None, cohort=10)
    secure = _train(privacy, SecAggSpec(enabled=True, bits=20), cohort=10)
    for name, p in plain.observations.final_params.items():
        torch.testing.assert_close(secure.observations.final_params[name], p, atol=2e-3, rtol=0)
    exposed = secure.observations.exposed
    assert "aggregates" in exposed and not secure.observations.exposes("client_updates")
    rounds = [h for h in secure.history if "secagg_upload_bytes" in h]
    assert rounds and all(h["secagg_upload_bytes"] > h["secagg_plain_bytes"] for h in rounds)
    assert all(h["secagg_contributors"] == h["cohort"] for h in rounds)


def test_distributed_dp_claim_uses_the_realised_noise_of_each_round():
    privacy = PrivacySpec(epsilon=8.0, clip=1.0)
    # seed 2 draws an aborted round at the noise calibrated for epsilon 8 (seed 0 did, before
    # the calibration searched on to meet the target within 1e-3)
    ddp = _train(privacy, SecAggSpec(enabled=True, distributed_dp=True, dropout_rate=0.2),
                 cohort=10, seed=2)
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


def test_report_section_lists_bytes_expansion_and_accuracy_change_per_epsilon():
    from jinja2 import Environment, PackageLoader, select_autoescape

    from privbench.privacy.secagg_rows import report_rows
    from privbench.report.render import _num
    from privbench.run.results import CellResult, MetricRow

    def cell(label, compression, accuracy, upload):
        spec = {"privacy": {"epsilon": 8.0},
                "secagg": {"enabled": True, "compression": compression, "groups": 0,
                           "neighbours": 0, "distributed_dp": True}}
        metrics = [MetricRow(label, "utility", "accuracy", accuracy),
                   MetricRow(label, "secagg", "upload_bytes", upload),
                   MetricRow(label, "secagg", "plain_bytes", 1000.0),
                   MetricRow(label, "secagg", "expansion", upload / 1000.0),
                   MetricRow(label, "secagg", "aborted_rounds", 0.0)]
        return CellResult(key=label, label=label, axes={}, status="ok", spec=spec,
                          claim={"epsilon": 7.5}, metrics=metrics)

    rows = report_rows([cell("full", "none", 0.90, 4000.0), cell("small", "topk", 0.85, 900.0)])
    small = next(r for r in rows if r["label"] == "small")
    assert small["accuracy_change"] == pytest.approx(-0.05) and small["reference"] == "full"
    env = Environment(loader=PackageLoader("privbench", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["num"] = _num
    html = env.get_template("sections/secagg.html.j2").render(secagg_rows=rows)
    assert "Secure aggregation" in html and "900" in html and "-0.05" in html
