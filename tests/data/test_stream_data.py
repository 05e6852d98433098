"""Streamed data sets (privbench/data/streamed.py): a Parquet or JSONL federation read per round for
the sampled cohort only trains exactly as the same records held in memory, a 100,000-client file
trains with the memory of its cohort, and a bad file is refused in one line before training."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from privbench.data.federation_gen import N_CLASSES, N_FEATURES, GeneratedClients
from privbench.data.partition import ClientShard
from privbench.data.stream_files import FederationWriter, write_generated
from privbench.data.streamed import open_stream
from privbench.errors import PrivbenchError
from privbench.models import build_model
from privbench.run.resources import peak_rss_mb, reset_peak_rss
from privbench.spec.schema import CellSpec
from privbench.trainers import train_fedavg
from privbench.trainers.client_data import from_shards
from privbench.trainers.fedavg import classifier_adapter


@pytest.fixture(autouse=True)
def _index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVBENCH_CACHE", str(tmp_path / "cache"))


def _spec(cohort: int, rounds: int, epsilon: float) -> CellSpec:
    return CellSpec.model_validate({
        "seed": 4, "model": {"hidden": [16]},
        "train": {"rounds": rounds, "cohort": cohort, "batch_size": 8, "lr": 0.1},
        "privacy": {"epsilon": epsilon, "clip": 1.0}})


def _train(spec: CellSpec, clients, public, n_features: int = N_FEATURES):
    model = build_model(spec.model, n_features, N_CLASSES, spec.seed)
    return train_fedavg(classifier_adapter(model), clients, public, spec.train, spec.privacy,
                        spec.seed)


def _in_memory(path: Path):
    """The whole file read at once, its clients' records as shards: the in-memory path."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True)
    x = frame[[f"f{i}" for i in range(N_FEATURES)]].to_numpy(np.float32)
    y = frame["label"].to_numpy(np.int64)
    ids = frame["client"].to_numpy()
    shards = [ClientShard(c, np.flatnonzero(ids == c)) for c in np.unique(ids)]
    return from_shards(x, y, shards)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_streamed_training_equals_training_on_the_records_in_memory(tmp_path, suffix):
    path = tmp_path / f"federation{suffix}"
    write_generated(path, 60, seed=4)
    streamed = open_stream(path, "auto", "label", "client", [])
    assert streamed.n_clients == 60 and streamed.index.features[:2] == ("f0", "f1")
    generated = GeneratedClients(60, seed=4)  # the file holds the generated records exactly
    idx = torch.tensor([3, 59, 0, 17])
    for name in ("x", "y"):
        assert torch.equal(streamed.rows(idx).batch[name], generated.rows(idx).batch[name])
    public = generated.held_out(5)
    spec = _spec(cohort=6, rounds=3, epsilon=4.0)
    lazy, eager = _train(spec, streamed, public), _train(spec, _in_memory(path), public)
    assert lazy.claim == eager.claim
    for name, p in lazy.observations.final_params.items():
        assert torch.equal(p, eager.observations.final_params[name]), name
    # each round read only its cohort's records (plus the first client, read once for shapes)
    assert streamed.reads < 0.5 * int(streamed.counts.sum())


def _write_large(path: Path, n_clients: int, n_features: int) -> int:
    rng = np.random.default_rng(0)
    counts = 1 + rng.poisson(2, n_clients)
    n = int(counts.sum())
    with FederationWriter(path) as writer:
        writer.write(rng.normal(size=(n, n_features)).astype(np.float32),
                     rng.integers(0, N_CLASSES, n), np.repeat(np.arange(n_clients), counts))
    return n


def test_a_100000_client_parquet_trains_with_the_memory_of_its_cohort(tmp_path):
    path, n_features = tmp_path / "large.parquet", 64
    n_records = _write_large(path, 100_000, n_features)
    rng = np.random.default_rng(1)
    public = {"x": torch.from_numpy(rng.normal(size=(50, n_features)).astype(np.float32)),
              "y": torch.from_numpy(rng.integers(0, N_CLASSES, 50))}
    spec = _spec(cohort=20, rounds=3, epsilon=8.0)
    warm = GeneratedClients(40, seed=0)  # the trainer's own imports, loaded before measuring
    _train(spec.model_copy(update={"train": spec.train.model_copy(update={"rounds": 1})}),
           warm, warm.held_out(5))
    gc.collect()
    reset_peak_rss()
    base = peak_rss_mb()
    streamed = open_stream(path, "auto", "label", "client", [])  # one pass, index stored
    index_mb = peak_rss_mb() - base
    gc.collect()
    reset_peak_rss()
    base = peak_rss_mb()
    trained = _train(spec, streamed, public, n_features)
    train_mb = peak_rss_mb() - base
    # what the in-memory path allocates: every client's records padded to the largest count
    in_memory_mb = streamed.n_clients * streamed.n_max * n_features * 4 / 1e6
    assert streamed.n_clients == 100_000 and len(trained.history) == 3
    assert streamed.reads < 600  # three Poisson cohorts of mean 20 clients, ~3 records each
    print(f"\n{n_records:,} records, {streamed.reads} read; in memory {in_memory_mb:.0f} MB; "
          f"index pass +{index_mb:.0f} MB, 3 rounds +{train_mb:.0f} MB")
    assert index_mb < in_memory_mb / 4 and train_mb < in_memory_mb / 4


def _small_file(path: Path, clients: list, labels: list | None = None) -> Path:
    labels = labels or [i % 2 for i in range(len(clients))]
    frame = pd.DataFrame({"client": clients, "label": labels,
                          "a": np.arange(len(clients), dtype=float)})
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_a_bad_streamed_file_is_refused_in_one_line(tmp_path, suffix):
    def refused(path: Path, match: str, client: str | None = "client", label: str = "label"):
        with pytest.raises(PrivbenchError, match=match) as e:
            open_stream(path, "auto", label, client, [])
        assert "\n" not in str(e.value)

    ok = _small_file(tmp_path / f"ok{suffix}", ["a", "a", "b", "c"])
    refused(tmp_path / f"missing{suffix}", r"data.path = .*: no such file")
    refused(ok, r"data.client: missing", client=None)
    refused(ok, r"data.client = 'user': .* no (column|key) 'user'", client="user")
    refused(ok, r"data.label = 'y': .* no (column|key) 'y'", label="y")
    refused(_small_file(tmp_path / f"empty_id{suffix}", ["a", "", "b", "c"]),
            r"(row|line) 2, (column|key) 'client': empty")
    refused(_small_file(tmp_path / f"unsorted{suffix}", ["a", "b", "a", "c"]),
            r"client 'a' .* appears again at (row|line) 3 .* sort the file by 'client'")
    refused(_small_file(tmp_path / f"one_class{suffix}", ["a", "b"], [1, 1]),
            r"data.label = 'label': .* has one class")
    if suffix == ".parquet":  # one row group of the whole file: every cohort would read it all
        big = tmp_path / "one_group.parquet"
        pd.DataFrame({"client": np.arange(70_000) // 7, "label": np.arange(70_000) % 2,
                      "a": 1.0}).to_parquet(big, row_group_size=70_000)
        refused(big, r"row group 0 holds 70,000 rows; .* row_group_size=4096")


def _stream_suite(tmp_path: Path, data: Path, extra: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f'name = "streamed"\nseed = 1\n[data]\nname = "stream"\npath = "{data.name}"\n'
                    f'client = "client"\nclients = 300\n{extra}[model]\nhidden = [16]\n'
                    "[train]\nrounds = 6\ncohort = 30\nlr = 0.3\n[privacy]\nepsilon = 8\n")
    return path


def test_a_streamed_file_runs_through_privbench_suite(tmp_path, capsys):
    import json

    from privbench.cli.main import main

    write_generated(tmp_path / "clients.parquet", 300, seed=2)
    code = main(["suite", str(_stream_suite(tmp_path, tmp_path / "clients.parquet")), "--out",
                 str(tmp_path / "run"), "--quiet"])
    assert code == 0, capsys.readouterr()
    (cell,) = json.loads((tmp_path / "run" / "results.json").read_text())["cells"]
    assert cell["status"] == "ok", cell["error"]
    # 300 clients, 75 held out as the test set and 75 as the population: 150 train
    assert cell["claim"]["sampling_rate"] == pytest.approx(30 / 150)
    rows = {(m["scorer"], m["metric"]): m["value"] for m in cell["metrics"]}
    assert rows[("utility", "accuracy")] > 0.3  # chance 0.1
    assert 0 <= rows[("loss", "auc")] <= 1 and rows[("privacy", "epsilon")] <= 8


def test_what_needs_every_record_in_memory_is_refused_before_training(tmp_path):
    from privbench.errors import SpecError
    from privbench.spec.suite import load_suite

    write_generated(tmp_path / "clients.jsonl", 300, seed=2)
    suite = _stream_suite(tmp_path, tmp_path / "clients.jsonl")
    load_suite(str(suite))  # the plain suite is fine
    suite.write_text(suite.read_text().replace("clients = 300", "clients = 299")
                     .replace("cohort = 30", "cohort = 200") + "[audit]\nenabled = true\n")
    with pytest.raises(SpecError) as err:
        load_suite(str(suite))
    problems = err.value.problems
    assert all("\n" not in p for p in problems)
    assert any(p.startswith("data.clients = 299: clients.jsonl names 300 clients")
               for p in problems), problems
    assert any(p.startswith("audit.enabled = true: needs every training record")
               for p in problems), problems
    assert any(p.startswith("train.cohort = 200: must be at most the 149 training clients")
               for p in problems), problems  # 299 clients: 75 test, 75 population held out
