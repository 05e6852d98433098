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
# Text data sets for the language-model tasks: generated support messages, or a user's JSONL folder.
TEXT_DATASETS = ("support_messages", "jsonl")


class StrictModel(BaseModel):
    """Base for every spec table: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class DataSpec(StrictModel):
    """Which data set, how it is split, and how it is partitioned into clients."""

    name: Literal["digits", "breast_cancer", "support_messages", "jsonl"] = "digits"
    path: str | None = Field(None, description="folder of JSONL files, one per client (jsonl)")
    test_fraction: float = Field(0.25, gt=0, lt=1)
    population_fraction: float = Field(0.25, gt=0, lt=1)
    clients: int = Field(50, ge=1)
    partition: Literal["iid", "dirichlet"] = "iid"
    dirichlet_alpha: float = Field(0.5, gt=0)


class ModelSpec(StrictModel):
    """Which model from the zoo; `mlp` with `hidden = []` is multinomial logistic regression."""

    name: Literal["mlp", "tiny_gpt2"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [32])
    path: str | None = Field(None, description="local Hugging Face model folder (LM tasks)")

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
    unit: Literal["client", "example"] = "client"
    accountant: Literal["pld"] = "pld"
    neighbouring: Literal["add_or_remove_one"] = "add_or_remove_one"


class LossAttackSpec(StrictModel):
    """The LOSS membership-inference attack (Yeom et al.): score = -loss."""

    enabled: bool = True


class CanaryExposureSpec(StrictModel):
    """Canary exposure (Carlini et al. 2019), rank-based over the whole secret space."""

    enabled: bool = True


class AttacksSpec(StrictModel):
    """Which attacks score each trained model."""

    loss: LossAttackSpec = Field(default_factory=LossAttackSpec)
    canary_exposure: CanaryExposureSpec = Field(default_factory=CanaryExposureSpec)


class CanarySpec(StrictModel):
    """Canaries planted in the private text: random digit secrets in templates."""

    count: int = Field(12, ge=0)
    digits: int = Field(4, ge=1, le=5, description="secret length; the space has 10^digits")
    repetitions: list[int] = Field(default_factory=lambda: [1, 4, 16])
    inclusion: float = Field(0.5, gt=0, le=1, description="probability a canary is planted")

    @field_validator("repetitions")
    @classmethod
    def _positive_repetitions(cls, v: list[int]) -> list[int]:
        if not v or any(r < 1 for r in v):
            raise ValueError("list at least one repetition count, each at least 1")
        return v


class LMSpec(StrictModel):
    """Language-model options: the default tiny GPT-2, its pretraining, fine-tuning, canaries."""

    finetune: Literal["lora", "full"] = "lora"
    lora_r: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_targets: list[str] = Field(default_factory=list,
                                    description="module names; empty = peft's default")
    optimizer: Literal["adam", "sgd"] = "adam"
    server_optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="DP-FedAvg server step on the noisy mean update (adam = DP-FedAdam)")
    max_length: int = Field(48, ge=4)
    microbatch: int = Field(64, ge=1, description="examples per vectorised gradient call")
    messages_per_client: int = Field(20, ge=2)
    layers: int = Field(2, ge=1)
    width: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    vocab_size: int = Field(1024, ge=300)
    pretrain_docs: int = Field(4000, ge=10)
    pretrain_steps: int = Field(300, ge=0)
    pretrain_batch: int = Field(32, ge=1)
    pretrain_lr: float = Field(3e-3, gt=0)
    canaries: CanarySpec = Field(default_factory=CanarySpec)


class CellSpec(StrictModel):
    """One fully resolved experiment: everything a cell's result depends on, bar the code."""

    name: str = Field("suite", min_length=1)
    description: str = ""
    seed: int = Field(0, ge=0)
    task: Literal["tabular", "causal_lm", "sequence_classification"] = "tabular"
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    attacks: AttacksSpec = Field(default_factory=AttacksSpec)
    lm: LMSpec = Field(default_factory=LMSpec)


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
    if spec.task != "tabular":
        from privbench.lm.checks import lm_problems

        return problems + lm_problems(spec)
    if spec.data.name not in DATASET_SIZES or spec.model.name != "mlp" or spec.model.path:
        return [*problems, f"task = {spec.task!r}: takes data.name digits or breast_cancer and "
                "model.name mlp without model.path; set task = \"causal_lm\" for text"]
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
