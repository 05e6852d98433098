"""The DP trainer in depth: the noise that runs is the noise claimed (central, local, sample-level),
per-example clipping equals a loop, the budget stop, resume after a crash, malicious clients, the
monitor's rollback, adaptive clipping, and the refusals of unaccountable sampling."""

from __future__ import annotations

import itertools
import json
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from privbench.data.partition import partition
from privbench.data.splits import SplitData, load_split
from privbench.errors import SpecError
from privbench.models import build_model
from privbench.models.adapter import ClassifierAdapter
from privbench.spec.load import validate_suite
from privbench.spec.schema import DataSpec, ModelSpec, PrivacySpec, TrainSpec
from privbench.trainers import tabular_inputs, train_fedavg
from privbench.trainers.linear_stack import classifier_adapter
from privbench.trainers.per_example import clipped_sum


def _zero_input_data(clients: int, per_client: int, seed: int = 0) -> SplitData:
    """All-zero features: a linear model's weight gradients are exactly zero, so whatever moves
    the weight matrix is the DP noise alone."""
    rng = np.random.default_rng(seed)
    n = clients * per_client
    zeros = np.zeros((n, 64), dtype=np.float32)
    labels = rng.integers(0, 10, n)
    return SplitData("zeros", zeros, labels, zeros[:50], labels[:50], zeros[:50], labels[:50], 10)


def _zero_input_run(clients: int, train: TrainSpec, privacy: PrivacySpec, seed: int = 0):
    data = _zero_input_data(clients, 12, seed)
    shards = partition(DataSpec(clients=clients), data.y_train, seed)
    model = build_model(ModelSpec(hidden=[]), 64, 10, seed)
    start = model[0].weight.detach().clone()
    trained = train_fedavg(*tabular_inputs(model, data, shards), train, privacy, seed)
    its = [start] + [it["0.weight"] for it in trained.observations.iterates]
    steps = np.stack([(b - a).flatten().double().numpy() for a, b in itertools.pairwise(its)])
    return trained, steps


def _assert_std(sample: np.ndarray, want: float) -> None:
    """Chi-square 99.9% interval for the standard deviation of n independent normal draws."""
    n = sample.size
    lo = want * math.sqrt(stats.chi2.ppf(0.0005, n) / n)
    hi = want * math.sqrt(stats.chi2.ppf(0.9995, n) / n)
    assert lo < float(np.sqrt(np.mean(sample ** 2))) < hi, (sample.std(), want)


def test_central_dp_noise_has_the_claimed_spread():
    train = TrainSpec(rounds=20, cohort=5, batch_size=8, lr=0.1)
    privacy = PrivacySpec(epsilon=4.0, clip=0.5)
    trained, steps = _zero_input_run(20, train, privacy)
    claim = trained.claim
    # server noise N(0, (z C)^2) on the sum, divided by the expected cohort
    _assert_std(steps * train.cohort, claim.noise_multiplier * claim.clip)


def test_local_dp_noise_has_the_claimed_spread():
    train = TrainSpec(rounds=20, cohort=5, batch_size=8, lr=0.1)
    privacy = PrivacySpec(epsilon=8.0, clip=0.5, setting="local", neighbouring="replace_one")
    trained, steps = _zero_input_run(20, train, privacy)
    claim = trained.claim
    assert claim.setting == "local" and any("server" in g for g in claim.guarantee_against)
    received = np.array([h["cohort"] - len(h.get("sat_out_at_cap", []))
                         for h in trained.history], dtype=float)
    ok = received > 0
    # the server averages the K noised updates it receives: std z C / sqrt(K)
    _assert_std(steps[ok] * np.sqrt(received[ok])[:, None], claim.noise_multiplier * claim.clip)


def test_sample_level_dp_sgd_noise_has_the_claimed_spread():
    train = TrainSpec(rounds=15, cohort=1, batch_size=4, lr=0.2)
    privacy = PrivacySpec(epsilon=8.0, clip=0.5, unit="example")
    trained, steps = _zero_input_run(1, train, privacy)
    claim = trained.claim
    assert claim.unit == "example" and claim.sampling == "poisson"
    local_steps = claim.steps // train.rounds
    # each of the local steps adds N(0, (z C)^2) to the clipped sum, scaled by lr / batch size
    scale = train.lr / train.batch_size * math.sqrt(local_steps)
    _assert_std(steps / scale, claim.noise_multiplier * claim.clip)


def test_per_example_clipped_sum_equals_a_loop():
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[8]), 5, 3, seed=0)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(2, 6, 5), torch.randint(0, 3, (2, 6))
    weights = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.float32)
    stacked = {n: p.unsqueeze(0).expand(2, *p.shape).clone() for n, p in params.items()}
    got, _ = clipped_sum(ClassifierAdapter(model), stacked, {"x": x, "y": y}, weights, clip=0.3,
                         engine="vmap")
    for k in range(2):
        want = {n: torch.zeros_like(p) for n, p in params.items()}
        for i in range(6):
            if not weights[k, i]:
                continue
            p = {n: v.clone().requires_grad_(True) for n, v in params.items()}
            loss = F.cross_entropy(torch.func.functional_call(model, p, (x[k, i:i + 1],)),
                                   y[k, i:i + 1])
            g = torch.autograd.grad(loss, list(p.values()))
            norm = torch.sqrt(sum(t.pow(2).sum() for t in g))
            for (n, _), t in zip(p.items(), g, strict=True):
                want[n] += t * min(1.0, 0.3 / float(norm))
        for n in params:
            torch.testing.assert_close(got[n][k], want[n], rtol=1e-5, atol=1e-6)


def _digits_run(train: TrainSpec, privacy: PrivacySpec, clients: int = 20, seed: int = 0,
                **kwargs):
    spec = DataSpec(clients=clients)
    data = load_split(spec, seed)
    shards = partition(spec, data.y_train, seed)
    model = build_model(ModelSpec(hidden=[16]), data.n_features, data.n_classes, seed)
    return train_fedavg(*tabular_inputs(model, data, shards), train, privacy, seed, **kwargs)


def test_a_round_that_would_exceed_max_epsilon_does_not_start():
    train = TrainSpec(rounds=6, cohort=5, batch_size=8)
    full = _digits_run(train, PrivacySpec(epsilon=8.0))
    cap = 5.0
    stopped = _digits_run(train, PrivacySpec(epsilon=8.0, max_epsilon=cap))
    ran = len(stopped.observations.iterates)
    assert 0 < ran < 6
    assert stopped.claim.epsilon <= cap and stopped.claim.steps == ran
    assert "stopped before round" in stopped.history[-1]["stopped"]
    assert any("max_epsilon" in n for n in stopped.claim.notes)
    # one more round would have crossed the cap: the run stopped exactly in time
    from privbench.privacy.claim import claim_for_poisson_gaussian
    more = claim_for_poisson_gaussian(
        noise_multiplier=stopped.claim.noise_multiplier, sampling_rate=0.25, steps=ran + 1,
        delta=1e-5, target_epsilon=8.0, clip=1.0, unit="client",
        neighbouring="add_or_remove_one", guarantee_against=[])
    assert more.epsilon > cap
    for name, p in stopped.observations.final_params.items():  # same rounds, same weights
        torch.testing.assert_close(p, full.observations.iterates[ran - 1][name])


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("privacy", [PrivacySpec(epsilon=4.0),
                                     PrivacySpec(epsilon=6.0, unit="example")],
                         ids=["client-central", "example"])
def test_a_run_killed_after_round_k_resumes_to_the_same_weights(tmp_path, privacy):
    train = TrainSpec(rounds=4, cohort=5, batch_size=8)
    straight = _digits_run(train, privacy)

    def crash_after_2(done: int, total: int) -> None:
        if done == 2:
            raise Crash

    with pytest.raises(Crash):
        _digits_run(train, privacy, on_round=crash_after_2, work_dir=tmp_path)
    resumed = _digits_run(train, privacy, work_dir=tmp_path)
    for name, p in straight.observations.final_params.items():
        assert torch.equal(p, resumed.observations.final_params[name])
    assert resumed.claim.epsilon == straight.claim.epsilon
    assert resumed.history == straight.history
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert sum('"kind": "round"' in line for line in lines) == 4  # rounds 1-2, then 3-4
    assert [json.loads(line)["round"] for line in lines] == [1, 2, 3, 4]  # each round once


def test_malicious_client_updates_are_rejected_logged_and_the_model_stays_finite(caplog):
    train = TrainSpec(rounds=4, cohort=5, batch_size=8, max_update_norm=100.0)
    attacks = {1: "nan", 2: "huge", 3: "shape", 4: "dtype"}
    victims = {}

    def malicious(round_no, clients, honest):
        victims[round_no] = clients[0]
        row = {n: u[0].clone() for n, u in honest.items()}
        kind = attacks[round_no]
        if kind == "nan":
            row["0.weight"][0, 0] = float("nan")
        elif kind == "huge":
            row["0.weight"] *= 1e6
            row["0.weight"] += 1.0
        elif kind == "shape":
            row["0.weight"] = row["0.weight"][:, :-1]
        else:
            row["0.bias"] = row["0.bias"].double()
        return {0: row}

    with caplog.at_level(logging.WARNING, logger="privbench.trainers"):
        trained = _digits_run(train, PrivacySpec(epsilon=8.0), tamper=malicious)
    for h in trained.history:
        rejected = h["rejected"]
        assert len(rejected) == 1
        assert rejected[0]["client"] == victims[h["round"]] and rejected[0]["round"] == h["round"]
        assert f"round {h['round']}: rejected the update of client {victims[h['round']]}" \
            in caplog.text
    reasons = [h["rejected"][0]["reason"] for h in trained.history]
    assert "NaN" in reasons[0] and "sanity bound" in reasons[1]
    assert "shape" in reasons[2] and "dtype" in reasons[3]
    assert all(bool(torch.isfinite(p).all()) for p in trained.observations.final_params.values())


def test_monitor_rolls_back_a_round_whose_loss_is_not_finite():
    train = TrainSpec(rounds=3, cohort=5, batch_size=8, max_update_norm=1e36)

    def poison(round_no, clients, honest):
        if round_no != 2:
            return {}
        return {i: {n: torch.full_like(u[i], 1e30) for n, u in honest.items()}
                for i in range(len(clients))}

    trained = _digits_run(train, PrivacySpec(epsilon=math.inf), tamper=poison)
    rollback = trained.history[1]["rollback"]
    assert rollback["rolled_back_to"] == 1 and "not finite" in rollback["reason"]
    for name, p in trained.observations.iterates[1].items():
        assert torch.equal(p, trained.observations.iterates[0][name])


def test_adaptive_clip_moves_towards_the_quantile_and_the_count_is_accounted():
    train = TrainSpec(rounds=8, cohort=10, batch_size=8)
    privacy = PrivacySpec(epsilon=8.0, clip=0.01, adaptive_clip=True, clip_lr=0.5,
                          count_noise_multiplier=5.0)
    trained = _digits_run(train, privacy, clients=40)
    clips = [h["clip"] for h in trained.history]
    assert clips[-1] > 3 * clips[0]  # every update is far above 0.01: the clip grows
    claim = trained.claim
    assert claim.count_noise_multiplier == 5.0
    combined = (claim.noise_multiplier ** -2 + (2 * 5.0) ** -2) ** -0.5
    inner = claim.dp_event["event"]["event"]  # SelfComposed(PoissonSampled(Gaussian))
    assert inner["noise_multiplier"] == pytest.approx(combined, rel=1e-9)
    assert combined < claim.noise_multiplier  # the count's cost is in the accounted event


@pytest.mark.parametrize(("overrides", "message"), [
    ({"train": {"sampling": "shuffle"}}, "train.sampling = 'shuffle'"),
    ({"train": {"sampling": "fixed_cohort"}}, "replace_one"),
    ({"privacy": {"setting": "local"}}, "privacy.setting = 'local'"),
])
def test_unaccountable_combinations_are_refused_with_a_clear_line(overrides, message):
    with pytest.raises(SpecError) as err:
        validate_suite(overrides, "test.toml")
    assert any(message in line for line in err.value.lines())


def test_fixed_cohort_with_dropouts_accounts_the_realised_cohorts():
    train = TrainSpec(rounds=6, cohort=8, batch_size=8, sampling="fixed_cohort", dropout=0.3)
    trained = _digits_run(train, PrivacySpec(epsilon=8.0, neighbouring="replace_one"),
                          clients=40)
    claim = trained.claim
    assert claim.sampling == "fixed_cohort" and claim.accountant == "rdp"
    sizes = [e["sample_size"] for e in _flatten(claim.dp_event)]
    realised = [h["cohort"] - h.get("dropped_out", 0) for h in trained.history]
    assert sorted(sizes) == sorted(realised) and min(realised) < 8
    assert claim.epsilon <= 8.0


def _flatten(event: dict) -> list[dict]:
    if event["type"] == "ComposedDpEvent":
        return [x for e in event["events"] for x in _flatten(e)]
    if event["type"] == "SelfComposedDpEvent":
        return _flatten(event["event"]) * event["count"]
    return [event]


def test_linear_layer_norms_give_the_same_clipped_sum_as_vmap_grad():
    from privbench.trainers.per_example import select_engine

    torch.manual_seed(1)
    model = build_model(ModelSpec(hidden=[7, 5]), 6, 4, seed=0)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    stacked = {n: (p.unsqueeze(0) + 0.1 * torch.randn(3, *p.shape)) for n, p in params.items()}
    x, y = torch.randn(3, 9, 6) * 3, torch.randint(0, 4, (3, 9))
    weights = (torch.rand(3, 9) < 0.7).float()
    adapter, batch = ClassifierAdapter(model), {"x": x, "y": y}
    assert select_engine(adapter, stacked, batch) == "ghost"  # what DP-SGD on an MLP runs
    want, want_norms = clipped_sum(adapter, stacked, batch, weights, clip=0.5, engine="vmap")
    kept = weights.bool()  # padding rows carry no gradient in the linear path
    fast = classifier_adapter(model)
    assert hasattr(fast, "clipped_sum")  # an MLP's adapter has the batched fast path
    for got, norms in (clipped_sum(adapter, stacked, batch, weights, clip=0.5, engine="ghost"),
                       fast.clipped_sum(stacked, batch, weights, 0.5)):
        torch.testing.assert_close(norms[kept], want_norms[kept], rtol=1e-4, atol=1e-6)
        for n in params:
            torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6)


def test_ledger_survives_a_line_cut_short_by_a_crash(tmp_path):
    from privbench.privacy.ledger import PrivacyLedger
    from privbench.trainers.privacy_plan import make_plan

    plan = make_plan(TrainSpec(rounds=4, cohort=5), PrivacySpec(epsilon=4.0), 20, 10.0)
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger(path, 1e-5, "add_or_remove_one")
    for r in range(2):
        ledger.record_round(r + 1, plan.run_event(r, 5), [1, 2], None)
    path.write_text(path.read_text() + '{"kind": "round", "rou')  # killed mid-write
    again = PrivacyLedger(path, 1e-5, "add_or_remove_one")
    assert [r["round"] for r in again.rounds] == [1, 2]
    again.record_round(3, plan.run_event(2, 5), [3], None)
    third = PrivacyLedger(path, 1e-5, "add_or_remove_one")
    assert [r["round"] for r in third.rounds] == [1, 2, 3]
    assert third.participations() == {1: 2, 2: 2, 3: 1}
    assert third.epsilon() == pytest.approx(
        PrivacyLedger(None, 1e-5, "add_or_remove_one").epsilon(
            accounting_three_rounds(plan)), rel=1e-12)


def accounting_three_rounds(plan):
    from privbench.privacy import accounting

    return accounting.compose_steps([plan.run_event(r, 5) for r in range(3)])
