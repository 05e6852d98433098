"""Client registry, consent and onboarding: only consenting, onboarded clients are sampled; a
withdrawn client is never sampled after its withdrawal round; the other clients' sampling is
what it would have been without the registry; the ledger and the card record it all."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from privbench.cli.main import main
from privbench.data.partition import ClientShard
from privbench.errors import SpecError
from privbench.governance import consent
from privbench.governance.onboarding import ModelNeeds, model_hash, model_needs, refusal
from privbench.governance.population import build_population
from privbench.spec.schema import PrivacySpec, TrainSpec
from privbench.spec.suite import load_suite
from privbench.trainers import train_fedavg
from privbench.trainers.client_data import from_shards
from privbench.trainers.linear_stack import classifier_adapter

N_CLIENTS, ROUNDS = 12, 10
# client -> the round it withdraws in (0: before the run)
WITHDRAWALS = {3: 4, 7: 0, 10: 7}


def _inputs(seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N_CLIENTS * 8, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    shards = [ClientShard(c, np.arange(c * 8, (c + 1) * 8)) for c in range(N_CLIENTS)]
    torch.manual_seed(seed)
    return classifier_adapter(nn.Linear(5, 2)), from_shards(x, y, shards)


def _registry(path: Path, withdrawals: dict[int, int], consenting: range = range(N_CLIENTS)
              ) -> Path:
    reg = consent.empty_registry()
    for c in consenting:
        consent.grant(reg, c, text_version="v3", time="2026-01-01T00:00:00Z")
    for c, w in withdrawals.items():
        consent.withdraw(reg, c, round_no=w, time="2026-01-02T00:00:00Z")
    consent.save_registry(path, reg)
    return path


def _run(tmp: Path, seed: int, registry: Path | None, name: str):
    adapter, data = _inputs(seed)
    population = None
    if registry is not None:
        needs = ModelNeeds(0.0, 0.0, math.inf, model_hash(adapter.init_params()))
        population = build_population(registry, N_CLIENTS, needs, check_devices=False)
    train = TrainSpec(rounds=ROUNDS, cohort=6, batch_size=4, lr=0.1)
    trained = train_fedavg(adapter, data, None, train, PrivacySpec(epsilon=8.0), seed,
                           work_dir=tmp / name, population=population)
    lines = [json.loads(t) for t in (tmp / name / "ledger.jsonl").read_text().splitlines()]
    return trained, lines


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_a_withdrawn_client_is_never_sampled_after_its_withdrawal_round(tmp_path, seed):
    registry = _registry(tmp_path / "clients.json", WITHDRAWALS)
    _, with_reg = _run(tmp_path, seed, registry, "with")
    _, without = _run(tmp_path, seed, None, "without")
    rounds = {e["round"]: e["participants"] for e in with_reg if e["kind"] == "round"}
    free = {e["round"]: e["participants"] for e in without if e["kind"] == "round"}
    assert sorted(rounds) == list(range(1, ROUNDS + 1))
    for c, w in WITHDRAWALS.items():
        assert all(c not in rounds[r] for r in range(w + 1, ROUNDS + 1)), (c, w)
        # before its withdrawal it is sampled exactly as without a registry
        assert [c in rounds[r] for r in range(1, w + 1)] == [c in free[r] for r in range(1, w + 1)]
    # everyone else's cohorts are the draws of the run without a registry, minus the withdrawn:
    # the per-client Poisson rate that is accounted does not change
    for r in range(1, ROUNDS + 1):
        gone = {c for c, w in WITHDRAWALS.items() if r > w}
        assert rounds[r] == [c for c in free[r] if c not in gone]
    # the ledger records each withdrawal once, before the first round it excludes the client
    lines = [(i, e) for i, e in enumerate(with_reg) if e["kind"] == "withdrawal"]
    assert sorted(e["client"] for _, e in lines) == sorted(WITHDRAWALS)
    for i, e in lines:
        w = WITHDRAWALS[e["client"]]
        assert e["withdrawn_in_round"] == w and e["excluded_from_round"] == w + 1
        after = [x for x in with_reg[i + 1:] if x["kind"] == "round"]
        assert after == [] or after[0]["round"] == w + 1
    # the accounting of every round is the event the plan accounts, as without a registry
    events = [(e["round"], e["event"]) for e in with_reg if e["kind"] == "round"]
    assert events == [(e["round"], e["event"]) for e in without if e["kind"] == "round"]


def test_the_test_above_can_fail_the_withdrawn_clients_would_be_sampled(tmp_path):
    """Without the registry the withdrawn clients are sampled after their rounds (over seeds)."""
    late = 0
    for seed in range(5):
        _, lines = _run(tmp_path, seed, None, f"free{seed}")
        for e in (e for e in lines if e["kind"] == "round"):
            late += sum(c in e["participants"] and e["round"] > w
                        for c, w in WITHDRAWALS.items())
    assert late > 10


def test_non_consenting_and_refused_clients_are_outside_the_population(tmp_path):
    adapter, data = _inputs(0)
    params = adapter.init_params()
    registry = _registry(tmp_path / "r.json", {}, consenting=range(2, N_CLIENTS))
    reg = consent.load_registry(registry)
    good = {"memory_mb": 64, "flops_per_second": 1e9, "model_hash": model_hash(params),
            "libraries": {"torch": torch.__version__, "safetensors": "0.4.5"}}
    for c in range(2, N_CLIENTS):
        consent.set_device(reg, c, good)
    consent.set_device(reg, 4, {**good, "memory_mb": 1e-4})
    consent.set_device(reg, 5, {**good, "model_hash": "0" * 64})
    consent.set_device(reg, 6, {**good, "libraries": {"torch": "1.13", "safetensors": "0.4"}})
    consent.set_device(reg, 8, {**good, "flops_per_second": 1.0})
    consent.save_registry(registry, reg)
    needs = model_needs(params, 12, records=8, epochs=1, batch_size=4, example_dp=False,
                        max_round_seconds=60)
    pop = build_population(registry, N_CLIENTS, needs)
    assert set(pop.refused) == {4, 5, 6, 8}
    assert "memory" in pop.refused[4] and "model hash" in pop.refused[5]
    assert "torch 1.13 < 2.3" in pop.refused[6] and "compute" in pop.refused[8]
    assert pop.not_consenting() == [0, 1]
    train = TrainSpec(rounds=8, cohort=8, batch_size=4)
    train_fedavg(adapter, data, None, train, PrivacySpec(epsilon=8.0), 0,
                 work_dir=tmp_path / "w", population=pop)
    lines = [json.loads(t) for t in (tmp_path / "w" / "ledger.jsonl").read_text().splitlines()]
    sampled = {c for e in lines if e["kind"] == "round" for c in e["participants"]}
    assert sampled and sampled.isdisjoint({0, 1, 4, 5, 6, 8})
    assert lines[0]["kind"] == "population" and set(lines[0]["refused"]) == {"4", "5", "6", "8"}
    card = pop.card(8)
    assert card["clients_in_population"] == N_CLIENTS - 6
    assert "outside the population" in card["onboarding"]
    assert refusal(None, needs).startswith("no device profile")


def test_a_cell_with_a_registry_states_withdrawals_in_its_card_and_ledger(tmp_path):
    from privbench.run.cell import run_cell
    from privbench.run.sealed import read_json

    registry = _registry(tmp_path / "clients.json", {2: 1}, consenting=range(8))
    suite = tmp_path / "s.toml"
    suite.write_text(f'''name = "consent"
seed = 2
[data]
name = "digits"
clients = 8
[model]
hidden = [4]
[train]
rounds = 3
cohort = 6
[privacy]
epsilon = 8.0
[attacks.loss]
enabled = false
[clients]
registry = "{registry}"
onboarding = false
''')
    cell = load_suite(str(suite), []).cells[0]
    result = run_cell(cell, tmp_path / "run")
    assert result.status == "ok", result.error
    folder = tmp_path / "run" / "cells" / cell.key
    card = read_json(folder / "card.json")["population"]
    assert card["withdrawals"] == [{"client": 2, "withdrawn_in_round": 1,
                                    "excluded_from_round": 2, "took_effect": True}]
    assert "never sampled again" in card["withdrawal_handling"]
    assert "Poisson-sampled at a fixed rate per client" in card["accounting"]
    assert card["consent_text_versions"] == ["v3"]
    lines = [json.loads(t) for t in (folder / "ledger.jsonl").read_text().splitlines()]
    assert [e["client"] for e in lines if e["kind"] == "withdrawal"] == [2]
    assert all(2 not in e["participants"] for e in lines
               if e["kind"] == "round" and e["round"] >= 2)
    from privbench.report.render import render_report
    from privbench.run.results import CellResult

    stored = CellResult.from_dict(read_json(folder / "result.json"))
    html = render_report(tmp_path / "run", load_suite(str(suite), []), [stored])
    assert "client 2 withdrew in round 1, never sampled from round 2" in html
    assert "why the accounting holds" in html
    # editing the registry makes another cell (a stale cached cell is never reused)
    consent.withdraw(reg := consent.load_registry(registry), 3, round_no=0)
    consent.save_registry(registry, reg)
    assert load_suite(str(suite), []).cells[0].key != cell.key


def test_clients_command_lists_and_edits_the_registry(tmp_path, capsys):
    path = tmp_path / "r.json"
    assert main(["clients", "add", str(path), "--count", "3", "--text-version", "v1"]) == 0
    assert main(["clients", "withdraw", str(path), "1", "--round", "5"]) == 0
    assert main(["clients", "withdraw", str(path), "1", "--round", "6"]) == 2
    assert main(["clients", "add", str(path), "1", "--text-version", "v2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["client 1: already withdrew in round 5",
                   "client 1: withdrew from 'training'; a withdrawal is final (register the "
                   "person again under a new client id)"]
    status = consent.consent_status(consent.load_registry(path)["clients"]["1"])
    assert status.may_train(5) and not status.may_train(6)
    assert main(["clients", "list", str(path)]) == 0
    assert "withdrawn" in capsys.readouterr().out


def test_registry_and_personal_problems_are_one_line_before_training(tmp_path):
    base = 'name = "x"\n[data]\nclients = 20\n[model]\nhidden = [4]\n'
    bad = tmp_path / "a.toml"
    bad.write_text(base + f'[clients]\nregistry = "{tmp_path / "none.json"}"\n')
    with pytest.raises(SpecError) as e:
        load_suite(str(bad), [])
    assert e.value.problems == [f"clients.registry = '{tmp_path / 'none.json'}': no such file; "
                                "create it with `privbench clients add FILE --count N`"]
    bad.write_text(base + '[personal]\nlayers = ["head"]\n')
    with pytest.raises(SpecError) as e:
        load_suite(str(bad), [])
    assert e.value.problems == ["personal.layers = ['head']: 'head' names no parameter; the "
                                "model's parameters are 0.weight, 0.bias, 2.weight, 2.bias"]


def test_a_cell_onboards_devices_against_the_models_needs(tmp_path, capsys):
    from privbench.run.cell import run_cell
    from privbench.run.sealed import read_json

    suite = tmp_path / "s.toml"
    registry = tmp_path / "clients.json"
    suite.write_text(f'''name = "onboarding"
seed = 4
[data]
name = "digits"
clients = 6
[model]
hidden = [4]
[train]
rounds = 3
cohort = 5
[privacy]
epsilon = 8.0
[attacks.loss]
enabled = false
[clients]
registry = "{registry}"
''')
    assert main(["clients", "add", str(registry), "--count", "6", "--text-version", "v1"]) == 0
    assert main(["clients", "needs", str(suite)]) == 0
    needs = dict(line.split(" = ") for line in capsys.readouterr().out.splitlines()
                 if line.startswith("model_hash"))
    libs = ["--lib", f"torch={torch.__version__.split('+')[0]}", "--lib", "safetensors=0.4.5"]
    device = ["--flops", "1e9", *libs, "--model-hash", needs["model_hash"]]
    assert main(["clients", "device", str(registry), "0", "1", "2", "3", "--memory-mb", "64",
                 *device]) == 0
    assert main(["clients", "device", str(registry), "4", "--memory-mb", "0.001", *device]) == 0
    cell = load_suite(str(suite), []).cells[0]
    result = run_cell(cell, tmp_path / "run")
    assert result.status == "ok", result.error
    folder = tmp_path / "run" / "cells" / cell.key
    card = read_json(folder / "card.json")["population"]
    assert set(card["refused_at_onboarding"]) == {"4", "5"}
    assert card["refused_at_onboarding"]["4"].startswith("memory 0.001 MB < ")
    assert card["refused_at_onboarding"]["5"].startswith("no device profile declared")
    assert card["clients_in_population"] == 4
    lines = [json.loads(t) for t in (folder / "ledger.jsonl").read_text().splitlines()]
    assert lines[0]["kind"] == "population" and set(lines[0]["refused"]) == {"4", "5"}
    sampled = {c for e in lines if e["kind"] == "round" for c in e["participants"]}
    assert sampled and sampled <= {0, 1, 2, 3}


def test_a_resumed_run_records_the_population_and_withdrawals_once(tmp_path):
    registry = _registry(tmp_path / "clients.json", WITHDRAWALS)
    needs = None

    def run(name: str, crash_at: int | None = None) -> bytes:
        nonlocal needs
        adapter, data = _inputs(1)
        needs = needs or ModelNeeds(0.0, 0.0, math.inf, model_hash(adapter.init_params()))
        population = build_population(registry, N_CLIENTS, needs, check_devices=False)

        def on_round(done: int, _total: int) -> None:
            if done == crash_at:
                raise KeyboardInterrupt

        train = TrainSpec(rounds=ROUNDS, cohort=6, batch_size=4, lr=0.1)
        try:
            train_fedavg(adapter, data, None, train, PrivacySpec(epsilon=8.0), 1, on_round,
                         work_dir=tmp_path / name, population=population)
        except KeyboardInterrupt:
            return b""
        return (tmp_path / name / "ledger.jsonl").read_bytes()

    whole = run("whole")
    assert run("crashed", crash_at=5) == b""
    assert run("crashed") == whole
    kinds = [json.loads(t)["kind"] for t in whole.decode().splitlines()]
    assert kinds.count("population") == 1 and kinds.count("withdrawal") == len(WITHDRAWALS)
