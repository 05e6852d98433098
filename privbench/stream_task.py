"""A suite cell on a streamed data set (`data.name = "stream"`): a Parquet or JSONL file whose
clients train from records read per round for the sampled cohort only (privbench/streamed.py).

The file's clients are split by seed: `data.test_fraction` and `data.population_fraction` of them
(at most `HELD_CLIENTS` each) are held out as the test set and the population pool, read once
into memory; every other client trains. The trainer is the one every cell uses (`train_fedavg`
through privbench/cell.py). The scorers read the test set, the population and, as the LOSS
attack's members, the records of a seeded sample of at most `HELD_CLIENTS` training clients,
read through the same `rows` path. Features are used as stored (standardise them when writing
the file). What needs every training record in memory (the canary audit, LiRA and RMIA's shadow
models, gradient inversion, personal layers, a client registry) is refused before the first
round (`stream_problems`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from privbench.spec import CellSpec, DataSpec

if TYPE_CHECKING:
    from privbench.data import DataShape
    from privbench.streamed import StreamedClients
    from privbench.suite import Cell
    from privbench.tasks import TaskRun

HELD_CLIENTS = 1_000  # most clients held out as the test set, the population, or scored members
NAME = "stream"


@dataclass(frozen=True)
class StreamSplit:
    """Which of the file's clients train, which are the test set and which the population."""

    train: np.ndarray
    test: np.ndarray
    pop: np.ndarray


def stream_split(n_clients: int, data: DataSpec, seed: int) -> StreamSplit:
    """The file's clients split by seed into training, test and population clients.

    Args:
        n_clients: the file's clients; data: the spec's data table; seed: the split's seed.

    Returns:
        The split, each part's client ids sorted.
    """
    order = np.random.default_rng([seed, 0x57EA]).permutation(n_clients)
    n_test, n_pop = (min(HELD_CLIENTS, max(1, round(f * n_clients)))
                     for f in (data.test_fraction, data.population_fraction))
    return StreamSplit(np.sort(order[n_test + n_pop:]), np.sort(order[:n_test]),
                       np.sort(order[n_test: n_test + n_pop]))


def open_spec_stream(data: DataSpec) -> StreamedClients:
    """The spec's streamed file, every client (its index loaded or built once per file state)."""
    from privbench.errors import PrivbenchError
    from privbench.streamed import open_stream

    if not data.path:
        raise PrivbenchError("data.path: missing; data.name = 'stream' reads your Parquet or "
                             "JSONL file; set data.path")
    return open_stream(data.path, data.format, data.label, data.client, data.features)


def stream_shape(data: DataSpec) -> DataShape:
    """What the spec's checks need of a streamed file, from its index (no record is read)."""
    from privbench.data import DataShape

    index = open_spec_stream(data).index
    split = stream_split(index.n_clients, data, 0)  # seed 0's split: another seed holds out
    # other clients, so its record counts differ by theirs (the client counts do not)
    return DataShape(Path(data.path or "").name, int(index.counts[split.train].sum()),
                     int(index.counts[split.pop].sum()), len(index.features),
                     len(index.label_names), index.n_clients)


def stream_problems(spec: CellSpec) -> list[str]:
    """One line for each option a streamed data set cannot serve (it needs every training record
    or every client's state in memory), and for too few clients to hold some out."""
    if spec.data.name != NAME:
        return []
    fix = "turn it off, or use data.name = 'table' for a file that fits in memory"
    wants = [("audit.enabled = true", spec.audit.enabled),
             ("attacks.lira.enabled = true", spec.attacks.lira.enabled),
             ("attacks.rmia.enabled = true", spec.attacks.rmia.enabled),
             ("attacks.inversion.enabled = true", spec.attacks.inversion.enabled),
             (f"personal.layers = {spec.personal.layers}", bool(spec.personal.layers)),
             (f"clients.registry = {spec.clients.registry!r}", spec.clients.registry is not None)]
    problems = [f"{what}: needs every training record or client in memory, and data.name = "
                f"'stream' reads only each round's cohort; {fix}" for what, on in wants if on]
    n_train = len(stream_split(spec.data.clients, spec.data, 0).train)
    if n_train < 1:
        problems.append(f"data.clients = {spec.data.clients}: a streamed file needs at least 3 "
                        "clients (test, population and training clients)")
    elif spec.train.cohort > n_train:
        problems.append(f"train.cohort = {spec.train.cohort:g}: must be at most the {n_train} "
                        "training clients of the streamed file (the others are held out as "
                        "test and population clients); lower the cohort")
    return problems


def stream_task(cell: Cell, run_dir: Path) -> TaskRun:
    """The cell's trainer inputs on a streamed file: the training clients streamed, the test set,
    the population (the monitor's public records) and the scored members held in memory."""
    import torch

    from privbench.data import SplitData
    from privbench.models import build_model
    from privbench.partition import ClientShard
    from privbench.scoring import CellContext, scorers_for
    from privbench.streamed import StreamedClients
    from privbench.tasks import TaskRun
    from privbench.trainers.fedavg import classifier_adapter
    from privbench.user_data import data_sha256

    spec = cell.spec
    every = open_spec_stream(spec.data)
    index, split = every.index, stream_split(every.n_clients, spec.data, spec.seed)
    clients = StreamedClients(index, split.train)
    scored = np.sort(np.random.default_rng([spec.seed, 0x5C0E]).permutation(
        clients.n_clients)[:HELD_CLIENTS])
    x_tr, y_tr = clients.gather(scored)
    x_te, y_te = every.gather(split.test)
    x_po, y_po = every.gather(split.pop)
    counts = index.counts[split.train][scored]
    bounds = np.r_[0, np.cumsum(counts)]
    shards = [ClientShard(int(c), np.arange(bounds[i], bounds[i + 1]))
              for i, c in enumerate(scored)]
    data = SplitData(f"{NAME}:{Path(spec.data.path or '').name}", x_tr, y_tr, x_te, y_te,
                     x_po, y_po, len(index.label_names))
    model = build_model(spec.model, data.n_features, data.n_classes, spec.seed)
    public = {"x": torch.from_numpy(x_po).float(), "y": torch.from_numpy(y_po).long()}
    h = hashlib.sha256(str(data_sha256(Path(spec.data.path or ""))).encode())
    for part in (split.train, split.test, split.pop, scored):
        h.update(np.ascontiguousarray(part).tobytes())

    def context(trained):  # -> CellContext
        return CellContext(cell=cell, data=data, shards=shards, trained=trained,
                           run_dir=run_dir)

    return TaskRun(classifier_adapter(model), clients, public, spec.train, context,  # type: ignore[arg-type]
                   scorers_for("classifier"), h.hexdigest()[:16])
