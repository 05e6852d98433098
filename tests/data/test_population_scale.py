"""Population-scale federations (privbench/data/federation_gen.py): a client's generated records
depend
only on the seed and its id; training on clients gathered a cohort at a time equals training on
the materialised client data bit for bit; and a round at 100,000 clients gathers only its cohort."""

from __future__ import annotations

import torch

from privbench.data.federation_gen import N_CLASSES, N_FEATURES, GeneratedClients, client_counts
from privbench.data.splits import load_split
from privbench.models import build_model
from privbench.spec.schema import CellSpec, DataSpec
from privbench.trainers import train_fedavg
from privbench.trainers.fedavg import classifier_adapter


def _spec(cohort: int, rounds: int, epsilon: float) -> CellSpec:
    return CellSpec.model_validate({
        "seed": 4, "model": {"hidden": [16]},
        "train": {"rounds": rounds, "cohort": cohort, "batch_size": 8, "lr": 0.1},
        "privacy": {"epsilon": epsilon, "clip": 1.0}})


def _train(spec: CellSpec, clients, public):
    model = build_model(spec.model, N_FEATURES, N_CLASSES, spec.seed)
    return train_fedavg(classifier_adapter(model), clients, public, spec.train, spec.privacy,
                        spec.seed)


def test_a_client_is_the_same_whoever_else_exists_or_is_gathered_with_it():
    small, large = GeneratedClients(50, seed=7), GeneratedClients(5_000, seed=7)
    assert torch.equal(small.counts, large.counts[:50])
    assert torch.equal(torch.from_numpy(client_counts(5, 7, first=20)), large.counts[20:25])
    alone, among = large.rows(torch.tensor([31])), large.rows(torch.tensor([4, 31, 4_999]))
    n = int(large.counts[31])
    few = small.rows(torch.tensor([31]))
    for name in ("x", "y"):
        assert torch.equal(alone.batch[name][0, :n], among.batch[name][1, :n])
        assert torch.equal(alone.batch[name][0, :n], few.batch[name][0, :n])
    assert not torch.equal(GeneratedClients(50, seed=8).rows(torch.tensor([31])).batch["x"][0, :2],
                           alone.batch["x"][0, :2])


def test_training_on_gathered_cohorts_equals_training_on_the_materialised_clients():
    clients = GeneratedClients(60, seed=4)
    public = clients.held_out(5)
    eager = clients.rows(torch.arange(60))  # every client's records, held at once
    spec = _spec(cohort=6, rounds=3, epsilon=4.0)
    lazy_run, eager_run = _train(spec, clients, public), _train(spec, eager, public)
    assert lazy_run.claim == eager_run.claim
    for name, p in lazy_run.observations.final_params.items():
        assert torch.equal(p, eager_run.observations.final_params[name]), name


def test_a_round_at_100000_clients_gathers_only_its_cohort():
    clients = GeneratedClients(100_000, seed=1)
    gathered: list[int] = []
    rows = clients.rows

    def counting(idx: torch.Tensor):
        gathered.append(len(idx))
        return rows(idx)

    clients.rows = counting  # type: ignore[method-assign]
    spec = _spec(cohort=8, rounds=3, epsilon=float("inf"))
    trained = _train(spec, clients, clients.held_out(5))
    assert len(trained.history) == 3
    assert max(gathered) <= 40 and sum(gathered) <= 3 * 40 + 2  # Poisson cohorts of mean 8
    # what the population itself costs: 8 bytes of record count a client
    assert clients.counts.element_size() * clients.counts.numel() == 8 * 100_000


def test_the_registered_data_set_loads_for_suites():
    data = load_split(DataSpec(name="synthetic_federation", clients=100), 0)
    assert data.n_features == N_FEATURES and data.n_classes == N_CLASSES
    assert len(data.y_train) + len(data.y_test) + len(data.y_pop) == 20_000
