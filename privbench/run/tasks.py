"""Tasks: what `spec.task` picks — an adapter, a data set and the scorers — never a pipeline.

Every task returns the same `TaskRun`, which privbench/run/cell.py hands to the one trainer
(`train_fedavg`) and then to the task's scorers, so a language model gets every capability the
trainer has (ledger, max_epsilon, checkpoints, screening, rollback, secure aggregation, local DP,
schedules, adaptive clipping) exactly as a tabular classifier does.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privbench.registry import Registry
from privbench.run.observations import TrainedModel
from privbench.run.results import MetricRow
from privbench.run.task_run import TaskRun
from privbench.spec.suite import Cell


def tabular_task(cell: Cell, run_dir: Path) -> TaskRun:
    """A classifier from the zoo on a tabular or image data set (built in, or the user's files),
    with the audit's canaries.

    Args:
        cell: the cell (data.name "stream" goes to stream_task); run_dir: the run folder.
    Returns:
        The TaskRun: adapter, client data, public data, train plan, scorers and hooks.
    """
    from privbench.audit.canaries import plant_audit_canaries, plants_canaries
    from privbench.data.partition import partition
    from privbench.data.splits import load_split
    from privbench.models import build_model
    from privbench.scoring import CellContext, scorers_for
    from privbench.trainers import tabular_inputs

    spec = cell.spec
    if spec.data.name == "stream":  # clients read per round for the cohort only
        from privbench.data.stream_task import stream_task

        return stream_task(cell, run_dir)
    data = load_split(spec.data, spec.seed)
    shards = partition(spec.data, data.y_train, spec.seed, clients=data.train_clients)
    model = build_model(spec.model, data.n_features, data.n_classes, spec.seed)
    inversion = spec.attacks.inversion  # the server keeps these rounds' client updates
    hooks: dict[str, Any] = {"record_rounds": set(inversion.rounds)} if inversion.enabled else {}
    planted = plant_audit_canaries(spec, data, shards, model) if plants_canaries(spec) else None
    if planted is not None:  # audit canaries: extra clients and an update hook, or gradient
        # canaries inside DP-SGD (privbench.audit)
        hooks.update({name: getattr(planted, name) for name in ("client_update_hook",
                                                                "gradient_canaries")
                      if getattr(planted, name) is not None})
    adapter, clients, public = tabular_inputs(model, planted.data if planted else data,
                                              planted.shards if planted else shards)

    def context(trained: TrainedModel) -> CellContext:
        return CellContext(cell=cell, data=data, shards=shards, trained=trained,
                           canaries=planted.canaries if planted else None, run_dir=run_dir)

    return TaskRun(adapter, clients, public, planted.train if planted else spec.train, context,
                   scorers_for("classifier"), data.fingerprint(), hooks)


def _language_task(cell: Cell, run_dir: Path) -> TaskRun:
    from privbench.models.lm_task import lm_task  # transformers loads only for language models

    return lm_task(cell, run_dir)


@dataclass(frozen=True)
class Task:
    """A registered task: what it trains on and how its TaskRun is built."""

    name: str
    description: str
    build: Callable[[Cell, Path], TaskRun]


TASKS: Registry[Task] = Registry("task", "task")
for _task in (
    Task("tabular", "a classifier (mlp, cnn or your module:factory) on a tabular or image data "
         "set", tabular_task),
    Task("causal_lm", "a Hugging Face causal LM (LoRA or full) on client text", _language_task),
    Task("sequence_classification", "a Hugging Face sequence classifier (LoRA or full) on "
         "labelled client text", _language_task),
):
    TASKS.register(_task.name, _task)


def build_task(cell: Cell, run_dir: Path) -> TaskRun:
    """The cell's task inputs (`spec.task` picks the builder).

    Args:
        cell: the cell; run_dir: the run folder.
    Returns:
        The TaskRun the registered task's builder gives.
    """
    return TASKS.get(cell.spec.task).build(cell, run_dir)


def score(key: str, ctx: Any, scorers: list[Callable[[Any], list[MetricRow]]]
          ) -> tuple[list[MetricRow], list[dict[str, str]]]:
    """Run every scorer on `ctx`; one that fails is recorded and the others still run.

    Args:
        key: the cell's content hash; ctx: the scorers' context; scorers: the task's scorers.
    Returns:
        The metric rows (a failed scorer adds one row, metric "error", value nan, with the
        message) and, for the history, each failure's scorer and traceback.
    """
    rows: list[MetricRow] = []
    failures: list[dict[str, str]] = []
    for scorer in scorers:
        try:
            rows.extend(scorer(ctx))
        except Exception as e:  # the trained model and the other metrics are kept
            name = getattr(scorer, "__name__", type(scorer).__name__).removesuffix("_scorer")
            message = f"{type(e).__name__}: {e}"
            rows.append(MetricRow(key, name, "error", float("nan"), details={"error": message}))
            failures.append({"scorer_error": name, "message": message,
                             "traceback": traceback.format_exc(limit=4)})
    return rows, failures
