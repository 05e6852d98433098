"""The inputs the one trainer was given for a language-model cell (`TrainerInputs`): what the
shadow-model attacks (attacks/membership/lm_shadows.py) hand to `train_runs` again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from privbench.data.tokens import Examples
from privbench.models.adapter import ModelAdapter
from privbench.spec.schema import TrainSpec


@dataclass(frozen=True)
class TrainerInputs:
    """The target's trainer inputs as `lm_task` built them.

    Attributes:
        adapter: the model adapter the trainer trained (its module is the released model).
        examples: every example the target trained on (the canary clients' placeholder rows
            included), with its client id; n_clients: the clients they belong to.
        train: the training plan that ran (the audited cohort where canary clients were added).
        hooks: the trainer hooks the target ran with (the audit's canary clients).
        optimizer, server_optimizer, engine, microbatch: how the clients and server stepped.
    """

    adapter: ModelAdapter
    examples: Examples
    n_clients: int
    train: TrainSpec
    hooks: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    server_optimizer: str = "sgd"
    engine: str = "auto"
    microbatch: int | None = None
