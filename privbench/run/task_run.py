"""What a task hands the one trainer: the model adapter, the clients' data, public data, the train
spec, the scorers and the context they read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from privbench.models.adapter import Batch, ModelAdapter
from privbench.run.observations import TrainedModel
from privbench.run.results import MetricRow
from privbench.spec.schema import TrainSpec
from privbench.trainers.client_data import ClientData


@dataclass
class TaskRun:
    """One cell's trainer inputs, and how to score what the trainer returns.

    `hooks` are the trainer's optional keyword arguments (audit canaries, recorded rounds);
    `context(trained)` builds what the task's `scorers` read.
    """

    adapter: ModelAdapter
    clients: ClientData
    public: Batch | None
    train: TrainSpec
    context: Callable[[TrainedModel], Any]
    scorers: list[Callable[[Any], list[MetricRow]]]
    fingerprint: str
    hooks: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    server_optimizer: str = "sgd"
    microbatch: int | None = None  # examples per vmap call of the per-example engine
