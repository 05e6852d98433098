"""A suite cell on a streamed data set (`data.name = "stream"`): a Parquet or JSONL file whose
clients train from records read per round for the sampled cohort only (privbench/data/streamed.py).

The file's clients are split by seed: `data.test_fraction` and `data.population_fraction` of them
(at most `HELD_CLIENTS` each) are held out as the test set and the population pool, read once
into memory; every other client trains. The trainer is the one every cell uses (`train_fedavg`
through privbench/run/cell.py). The scorers read the test set, the population and, as the LOSS
attack's members, the records of a seeded sample of at most `HELD_CLIENTS` training clients,
read through the same `rows` path. Features are used as stored (standardise them when writing
the file). What needs every training record in memory (the canary audit, LiRA and RMIA's shadow
models, gradient inversion, personal layers, a client registry) is refused before the first
round (`stream_problems`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from privbench.data.stream_split import HELD_CLIENTS, open_spec_stream, stream_split
from privbench.spec.schema import CellSpec

if TYPE_CHECKING:
    from privbench.run.task_run import TaskRun
    from privbench.spec.suite import Cell

NAME = "stream"


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
    the population (the monitor's public records) and the scored members held in memory.

    Args:
        cell: the cell (data.name "stream"); run_dir: the run folder.
    Returns:
        The TaskRun; its clients are a StreamedClients, its fingerprint hashes the file and splits.
    """
    import torch

    from privbench.data.partition import ClientShard
    from privbench.data.splits import SplitData
    from privbench.data.streamed import StreamedClients
    from privbench.data.user_data import data_sha256
    from privbench.models import build_model
    from privbench.run.task_run import TaskRun
    from privbench.scoring import CellContext, scorers_for
    from privbench.trainers.fedavg import classifier_adapter

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
