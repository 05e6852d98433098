"""Suite specs: the pydantic schema of a suite TOML file, loading, `--set` overrides and errors.

Every problem becomes one line that names the field path, the bad value and what is allowed, so a
user can fix a file without reading a traceback.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from privbench.errors import SpecError

# Records in each built-in data set, so that a spec can be checked before anything loads.
DATASET_SIZES = {"digits": 1797, "breast_cancer": 569}


class StrictModel(BaseModel):
    """Base for every spec table: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class DataSpec(StrictModel):
    """Which data set, how it is split, and how it is partitioned into clients."""

    name: Literal["digits", "breast_cancer"] = "digits"
    test_fraction: float = Field(0.25, gt=0, lt=1)
    population_fraction: float = Field(0.25, gt=0, lt=1)
    clients: int = Field(50, ge=1)
    partition: Literal["iid", "dirichlet"] = "iid"
    dirichlet_alpha: float = Field(0.5, gt=0)


class ModelSpec(StrictModel):
    """Which model from the zoo; `mlp` with `hidden = []` is multinomial logistic regression."""

    name: Literal["mlp"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [32])

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError("every hidden width must be at least 1")
        return v


class TrainSpec(StrictModel):
    """The federated plan: rounds, expected cohort (Poisson client sampling) and local SGD."""

    rounds: int = Field(30, ge=1)
    cohort: float = Field(10, gt=0, description="expected number of clients sampled per round")
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.1, gt=0)
    server_lr: float = Field(1.0, gt=0)


class PrivacySpec(StrictModel):
    """The privacy the user wants; the trainer's Claim states what it actually delivered."""

    epsilon: float = Field(8.0, gt=0, description="target epsilon; inf trains without DP")
    delta: float = Field(1e-5, gt=0, lt=1)
    clip: float = Field(1.0, gt=0, description="L2 bound on each client's update")
    unit: Literal["client"] = "client"
    accountant: Literal["pld"] = "pld"
    neighbouring: Literal["add_or_remove_one"] = "add_or_remove_one"


class LossAttackSpec(StrictModel):
    """The LOSS membership-inference attack (Yeom et al.): score = -loss."""

    enabled: bool = True


class InversionAttackSpec(StrictModel):
    """Gradient inversion by an honest-but-curious server that reads client updates."""

    enabled: bool = False
    rounds: list[int] = Field(default_factory=lambda: [1],
                              description="rounds (1-based) whose client updates are attacked")
    clients: int = Field(20, ge=1, description="clients attacked at most, over those rounds")
    noise: Literal["observed", "client"] = Field(
        "observed", description="observed: attack the updates as the server holds them (clipped, "
        "before central noise); client: add the cell's N(0, (z C)^2) to each update first, as "
        "when the client adds the noise (local or distributed DP)")
    image_attacks: list[Literal["analytic", "idlg", "ig", "dlg"]] = Field(
        default_factory=lambda: ["analytic", "idlg"])
    iterations: int = Field(200, ge=1, description="optimiser steps of Inverting Gradients / DLG")
    text: bool = Field(False, description="also attack a tiny GPT-2 (bag of words, DAGER)")
    text_batches: int = Field(20, ge=1)
    text_batch_size: int = Field(4, ge=1, le=8)

    @field_validator("rounds")
    @classmethod
    def _positive_rounds(cls, v: list[int]) -> list[int]:
        if not v or any(r < 1 for r in v):
            raise ValueError("give at least one round, each at least 1")
        return v


class AttacksSpec(StrictModel):
    """Which attacks score each trained model."""

    loss: LossAttackSpec = Field(default_factory=LossAttackSpec)
    inversion: InversionAttackSpec = Field(default_factory=InversionAttackSpec)


class CellSpec(StrictModel):
    """One fully resolved experiment: everything a cell's result depends on, bar the code."""

    name: str = Field("suite", min_length=1)
    description: str = ""
    seed: int = Field(0, ge=0)
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    attacks: AttacksSpec = Field(default_factory=AttacksSpec)


class SuiteSpec(CellSpec):
    """A suite file: a cell spec plus an optional `[sweep]` grid of dotted field paths."""

    sweep: dict[str, list[Any]] = Field(default_factory=dict)


def consistency_problems(spec: CellSpec) -> list[str]:
    """Cross-field checks that a single field's type cannot express."""
    problems = []
    if spec.train.cohort > spec.data.clients:
        problems.append(
            f"train.cohort = {_show(spec.train.cohort)}: must be at most data.clients "
            f"({spec.data.clients}); lower the cohort or raise the client count"
        )
    inversion = spec.attacks.inversion
    if inversion.enabled and max(inversion.rounds) > spec.train.rounds:
        problems.append(
            f"attacks.inversion.rounds = {inversion.rounds}: every round must be at most "
            f"train.rounds ({spec.train.rounds}); drop the later rounds"
        )
    held = spec.data.test_fraction + spec.data.population_fraction
    n_train = DATASET_SIZES[spec.data.name] - math.ceil(held * DATASET_SIZES[spec.data.name])
    if held < 0.9 and spec.data.clients > n_train:
        problems.append(
            f"data.clients = {spec.data.clients}: must be at most the {n_train} training records "
            f"of {spec.data.name}; lower data.clients"
        )
    if held >= 0.9:
        problems.append(
            f"data.test_fraction + data.population_fraction = "
            f"{spec.data.test_fraction + spec.data.population_fraction:g}: must be below 0.9 "
            "so that records remain for training"
        )
    return problems


# ---------------------------------------------------------------------------------------------
# Loading and overrides


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a one-line SpecError."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SpecError(str(path), ["file not found; give a built-in suite name or a TOML path"]
                        ) from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(str(path), [f"not valid TOML: {e}"]) from None


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `a.b=value`; the value is read as a TOML value, else taken as a plain string."""
    if "=" not in text:
        raise SpecError("--set", [f"{text!r}: expected FIELD=VALUE, e.g. privacy.epsilon=4"])
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise SpecError("--set", [f"{text!r}: the field path before '=' is empty"])
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each `--set a.b=value` applied.

    Setting a field that the sweep varies pins it: the field leaves the sweep.
    `--set sweep.privacy.epsilon=[1,2]` replaces that sweep axis.
    """
    out = copy.deepcopy(raw)
    for text in overrides:
        key, value = parse_override(text)
        if key.startswith("sweep."):
            out.setdefault("sweep", {})[key[len("sweep.") :]] = value
            continue
        set_path(out, key, value)
        sweep = out.get("sweep")
        if isinstance(sweep, dict):
            sweep.pop(key, None)
    return out


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `tree[a][b] = value` for `dotted = "a.b"`, creating tables on the way."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def validate_suite(raw: dict[str, Any], source: str) -> SuiteSpec:
    """Validate a suite's raw TOML data; raise SpecError with one line per problem."""
    try:
        spec = SuiteSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(source, format_validation_error(e)) from None
    problems = consistency_problems(spec)
    if problems:
        raise SpecError(source, problems)
    return spec


def format_validation_error(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per pydantic error: `path = value: what is allowed`."""
    lines = []
    for err in error.errors():
        path = prefix + ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = ".".join(str(p) for p in err["loc"][:-1])
            allowed = _allowed_keys(parent)
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{path}: unknown key{hint}")
            continue
        msg = err["msg"]
        if msg.startswith("Input should be "):
            msg = "must be " + msg[len("Input should be ") :]
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if path == "privacy.epsilon" and kind in ("greater_than", "float_parsing", "float_type"):
            msg += " (use inf to train without DP)"
        lines.append(f"{path} = {_show(err.get('input'))}: {msg}")
    return lines


def _allowed_keys(parent: str) -> list[str]:
    model: type[BaseModel] = SuiteSpec
    for part in [p for p in parent.split(".") if p]:
        field = model.model_fields.get(part)
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _show(value: Any) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (str, list, dict)):
        return repr(value)
    return str(value)
