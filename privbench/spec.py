"""Suite specs: the pydantic schema of a suite TOML file, loading, `--set` overrides and errors.

Every problem becomes one line that names the field path, the bad value and what is allowed, so a
user can fix a file without reading a traceback.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from privbench.datasets import DATA_SETS, NAMES, names_of
from privbench.errors import SpecError
from privbench.trainers.mechanisms import SETTINGS

# Derived from the data-set registry (privbench/datasets.py): records in each built-in tabular
# data set, so that a spec can be checked before anything loads, and the text data sets.
DATASET_SIZES = {n: i.records for n, i in DATA_SETS.items() if i.kind == "tabular" and i.records}
TEXT_DATASETS = names_of("text")


class StrictModel(BaseModel):
    """Base for every spec table: unknown keys are errors, not silently ignored; values must have
    the TOML type the field expects (`lr = "0.1"` or `rounds = 5.0` are refused, not converted;
    an integer is accepted where a float is expected); inf and nan are refused except where a
    field says what inf means (privacy.epsilon, privacy.max_epsilon, train.max_update_norm)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True,
                              allow_inf_nan=False)


class DataSpec(StrictModel):
    """Which data set, how it is split, and how it is partitioned into clients.

    A user's files: `name = "table"` reads a CSV or Parquet file (`path`; `format` from its
    suffix) with numeric `features`, a `label` column and optionally a `client` column whose
    values are the clients; `name = "images"` reads a folder of class folders (optionally inside
    client folders); `name = "jsonl"` a folder of JSONL files, one per client."""

    name: Literal[NAMES] = "digits"  # type: ignore[valid-type]  (the registry's names)
    path: str | None = Field(None, description="your data: a CSV or Parquet file (table), an "
                             "image folder (images) or a folder of JSONL files (jsonl)")
    format: Literal["auto", "csv", "parquet"] = Field(
        "auto", description="table: the file's format; auto reads it from the suffix")
    label: str = Field("label", min_length=1, description="table: the label column")
    client: str | None = Field(None, min_length=1, description="table: the client-id column; "
                               "none: records are partitioned into data.clients clients")
    features: list[str] = Field(default_factory=list, description="table: the numeric feature "
                                "columns; empty: every column but the label and client ones")
    image_size: int | None = Field(None, ge=2, description="images: resize each image to this "
                                   "side (square); none: every image must be square, one size")
    test_fraction: float = Field(0.25, gt=0, lt=1)
    population_fraction: float = Field(0.25, gt=0, lt=1)
    clients: int = Field(50, ge=1)
    partition: Literal["iid", "dirichlet"] = "iid"
    dirichlet_alpha: float = Field(0.5, gt=0)


class ModelSpec(StrictModel):
    """Which model: `mlp` (`hidden = []` is multinomial logistic regression), `cnn` for square
    one-channel images, or `factory`, a user's `nn.Module` from `factory = "pkg.mod:fn"`
    (setting `factory` alone selects it), called with (n_features, n_classes, **kwargs)."""

    name: Literal["mlp", "cnn", "factory", "tiny_gpt2"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [32])
    channels: list[int] = Field(default_factory=lambda: [16, 32],
                                description="output channels of the CNN's two convolutions")
    factory: str | None = Field(None, description="your model's entry point \"pkg.mod:fn\", "
                                "called with (n_features, n_classes, **kwargs)")
    kwargs: dict[str, Any] = Field(default_factory=dict,
                                   description="keyword arguments for model.factory")
    engine: Literal["auto", "ghost", "vmap", "hooks"] = Field(
        "auto", description="per-example gradient engine; auto picks the fastest that runs")
    path: str | None = Field(None, description="local Hugging Face model folder (LM tasks)")

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError("every hidden width must be at least 1")
        return v

    @field_validator("channels")
    @classmethod
    def _two_channel_widths(cls, v: list[int]) -> list[int]:
        if len(v) != 2 or any(w < 1 for w in v):
            raise ValueError("must be two positive widths, e.g. [16, 32]")
        return v

    @model_validator(mode="after")
    def _factory_selects_itself(self) -> ModelSpec:
        if self.factory is not None and "name" not in self.model_fields_set:
            self.name = "factory"
        return self

    def problems(self) -> list[str]:
        """Cross-field problems of the model table, one line each."""
        if self.name == "factory" and self.factory is None:
            return ['model.name = "factory": needs model.factory = "pkg.mod:fn"']
        if self.factory is not None and self.name != "factory":
            return [f"model.factory = {self.factory!r}: model.name = {self.name!r} builds "
                    "another model; drop model.name or set it to \"factory\""]
        if self.kwargs and self.name != "factory":
            return [f"model.kwargs: only model.factory takes keyword arguments (model.name = "
                    f"{self.name!r}); drop model.kwargs"]
        return []


class TrainSpec(StrictModel):
    """The federated plan: rounds, expected cohort (Poisson client sampling) and local SGD."""

    rounds: int = Field(30, ge=1)
    cohort: float = Field(10, gt=0, description="expected number of clients sampled per round")
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.1, gt=0)
    server_lr: float = Field(1.0, gt=0)
    # How the cohort is drawn each round. "shuffle" (fixed batches of a shuffled client list) has
    # no tight accountant here: a private run with it is refused rather than given a Poisson
    # epsilon (Chua et al. 2024).
    sampling: Literal["poisson", "fixed_cohort", "shuffle"] = "poisson"
    dropout: float = Field(0.0, ge=0, lt=1, description="chance a sampled client drops out")
    max_update_norm: float = Field(1e4, gt=0, allow_inf_nan=True,
                                   description="server sanity bound before clipping; inf: none")
    max_accuracy_drop: float = Field(1.0, gt=0, le=1, description="monitor: roll back when the "
                                     "global model's accuracy on public data falls by more")


class PrivacySpec(StrictModel):
    """The privacy the user wants; the trainer's Claim states what it actually delivered."""

    epsilon: float = Field(8.0, gt=0, allow_inf_nan=True,
                           description="target epsilon; inf trains without DP")
    delta: float = Field(1e-5, gt=0, lt=1)
    clip: float = Field(1.0, gt=0, description="L2 bound on each client's update (unit "
                        "client) or on each example's gradient (unit example)")
    unit: Literal["client", "example"] = "client"
    setting: Literal[SETTINGS] = Field(  # type: ignore[valid-type]  (the mechanisms' settings)
        "central", description="client level: central (server adds noise) or local (each "
        "client noises its own update); unit example always noises inside the client")
    accountant: Literal["pld"] = "pld"
    neighbouring: Literal["add_or_remove_one", "replace_one"] = "add_or_remove_one"
    max_epsilon: float = Field(math.inf, gt=0, allow_inf_nan=True, description="ledger: a round "
                               "that would exceed this epsilon does not start")
    noise_schedule: list[float] = Field(default_factory=list, description="relative noise of "
                                        "equal spans of the rounds, e.g. [2, 1]; empty = constant")
    adaptive_clip: bool = False
    target_quantile: float = Field(0.5, gt=0, lt=1)
    clip_lr: float = Field(0.2, gt=0, description="geometric step of the adaptive clip")
    count_noise_multiplier: float = Field(
        10.0, gt=0, description="noise of the adaptive clip's count (Andrew et al. sigma_b)")

    @field_validator("noise_schedule")
    @classmethod
    def _positive_factors(cls, v: list[float]) -> list[float]:
        if any(not (f > 0 and math.isfinite(f)) for f in v):
            raise ValueError("every noise factor must be a finite number above 0")
        return v


class SecAggSpec(StrictModel):
    """Secure aggregation of each cohort's clipped updates (trainers/secagg): the server sees
    only the sum; optionally clients add the DP noise themselves (distributed DP)."""

    enabled: bool = False
    threshold: float = Field(0.6, gt=0, le=1,
                             description="fraction of a client's neighbours needed to unmask it")
    neighbours: int = Field(0, ge=0, description="0: all pairs (SecAgg); k: k-regular (SecAgg+)")
    bits: int = Field(16, ge=2, le=31, description="quantisation bits per entry of an update")
    modulus_bits: int = Field(32, ge=8, le=32, description="the secure sum lives mod 2^this")
    dropout_rate: float = Field(0.0, ge=0, lt=1, description="chance a client drops after masking")
    distributed_dp: bool = Field(False, description="clients add discrete Gaussian noise")
    compression: Literal["none", "rotation", "topk", "topk+rotation"] = "none"
    topk_fraction: float = Field(0.1, gt=0, le=1)
    groups: int = Field(0, ge=0, description="0: one level; G >= 2: clients -> G aggregators")
    aggregator_noise: float = Field(0.0, ge=0,
                                    description="noise multiplier each group aggregator adds")


class LossAttackSpec(StrictModel):
    """The LOSS membership-inference attack (Yeom et al.): score = -loss."""

    enabled: bool = True


class ShadowSpec(StrictModel):
    """Shadow (reference) models for LiRA and RMIA: trained like the target, on the audit pool,
    each record included in half of them, as one batched model; cached by content hash."""

    models: int = Field(16, ge=1, description="number of shadow models trained")


class LiraAttackSpec(StrictModel):
    """LiRA (Carlini et al. 2022), online and offline, over the shadow models."""

    enabled: bool = False
    variance: Literal["fixed", "per_example"] = "fixed"


class RmiaAttackSpec(StrictModel):
    """RMIA (Zarifzadeh et al. 2024) with 1 to K of the shadow models as reference models."""

    enabled: bool = False
    references: int = Field(0, ge=0, description="reference models used; 0 means all shadows")
    mode: Literal["online", "offline"] = "online"
    gamma: float = Field(1.0, ge=1.0)
    offline_a: float = Field(0.3, ge=0.0, le=1.0)


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


class CanaryExposureSpec(StrictModel):
    """Canary exposure (Carlini et al. 2019), rank-based over the whole secret space."""

    enabled: bool = True


class AttacksSpec(StrictModel):
    """Which attacks score each trained model."""

    loss: LossAttackSpec = Field(default_factory=LossAttackSpec)
    shadows: ShadowSpec = Field(default_factory=ShadowSpec)
    lira: LiraAttackSpec = Field(default_factory=LiraAttackSpec)
    rmia: RmiaAttackSpec = Field(default_factory=RmiaAttackSpec)
    inversion: InversionAttackSpec = Field(default_factory=InversionAttackSpec)
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


class AuditSpec(StrictModel):
    """The empirical privacy audit: canaries planted with random inclusion bits (one run) or in half
    of many runs (multi-run), turned into an epsilon lower bound held against the claim. A client-
    level canary is its own client, an example-level one a record: including it is exactly the
    add/remove-one change that the claim bounds."""

    enabled: bool = False
    mode: Literal["one-run", "multi-run", "fl-one-shot"] = "one-run"
    surface: Literal["final_model", "final_weights", "iterates", "client_updates",
                     "aggregates"] = "final_model"
    canary: Literal["mislabelled", "ood", "random-unit", "dirac", "secret", "auto"] = Field(
        "mislabelled", description="records for final_model; random-unit client updates "
        "(client level) or dirac per-example gradients (example level) otherwise; secret: "
        "digit secrets in a fixed template (language models, final_model); auto: the "
        "strongest canary each cell takes (`strongest_canary`), so one suite audits both units")
    n_canaries: int = Field(200, ge=4, description="canaries of a one-run or one-shot audit")
    runs: int = Field(500, ge=10, description="multi-run: training runs per world (canary in, "
                      "canary out), trained side by side")
    canary_norm: float = Field(1.0, gt=0, description="update or gradient canary norm, times "
                               "privacy.clip")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="1 - confidence of the lower bound")
    selection: Literal["split", "union"] = Field(
        "split", description="one-run guess counts: chosen on half the canaries, or union bound")
    design: Literal["manual", "auto"] = Field(
        "manual", description="auto: for dirac and random-unit canaries, choose n_canaries and "
        "canary_norm for power within the scoring budget (privbench.audit.design)")
    estimator: Literal["auto", "gauss-sum", "fdp", "steinke"] = Field(
        "auto", description="one-run bound: auto = gauss-sum for white-box canaries (dirac, "
        "random-unit), steinke otherwise; fdp = Mahloujifar et al. 2025 on designed guesses")
    forensics_alpha: float = Field(0.01, gt=0, lt=0.5, description="false-alarm rate of each "
                                   "noise-forensics test (white-box surfaces)")


class ClientsSpec(StrictModel):
    """[governance] The client registry (privbench.consent): only clients that consented to
    `scope` and pass onboarding are sampled; a withdrawal takes effect from the next round."""

    registry: str | None = Field(None, description="client registry JSON (`privbench clients`); "
                                 "none: every client of the data set takes part")
    scope: str = Field("training", min_length=1, description="the consent scope training needs")
    onboarding: bool = Field(True, description="check each client's declared device profile "
                             "against the model's needs; refused clients are not sampled")
    max_round_seconds: float = Field(600.0, gt=0, description="onboarding: longest a round of "
                                     "local training may take at the declared speed")


class PersonalSpec(StrictModel):
    """[governance] Personalisation at the edge: FedPer-style personal layers (kept on each
    client, never sent or aggregated) and fine-tuned personal heads (privbench.personal)."""

    mode: Literal["fedper", "finetune"] = Field(
        "fedper", description="fedper: the layers never leave the client and are never "
        "aggregated; finetune: FedAvg trains every layer, then each client fine-tunes its own "
        "copy of the layers")
    layers: list[str] = Field(default_factory=list, description="parameter-name prefixes kept "
                              "on the client, e.g. [\"net.2\"]; empty: no personal layers")
    finetune_epochs: int = Field(0, ge=0, description="local epochs each client fine-tunes its "
                                 "personal layers on its own data after training")


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
    secagg: SecAggSpec = Field(default_factory=SecAggSpec)
    audit: AuditSpec = Field(default_factory=AuditSpec)
    lm: LMSpec = Field(default_factory=LMSpec)
    clients: ClientsSpec = Field(default_factory=ClientsSpec)
    personal: PersonalSpec = Field(default_factory=PersonalSpec)


    @model_validator(mode="after")
    def _resolve_auto_canary(self) -> CellSpec:
        if type(self) is CellSpec and self.audit.canary == "auto":  # a suite keeps "auto"
            self.audit = with_strongest_canary(self).audit
        return self


def strongest_canary(spec: CellSpec) -> tuple[str, str]:
    """(canary, surface) for audit.canary = "auto": the strongest design the cell's unit, task
    and data take, on audit.surface where it reads the weights.

    - client level: canary clients ("random-unit") on a white-box surface (iterates or
      final_weights), else mislabelled records (classifiers) or secret canaries (language
      models) on the released model;
    - example level: Dirac gradient canaries on a white-box surface for centralised DP-SGD (one
      client, a finite epsilon), else secret canaries on the released model (language models)
      or mislabelled records.
    """
    a = spec.audit
    white = a.surface in ("iterates", "final_weights")
    black_box = ("secret" if spec.task == "causal_lm" else "mislabelled", "final_model")
    if spec.privacy.unit == "client":
        return ("random-unit", a.surface) if white else black_box
    central = spec.data.clients == 1 and spec.train.cohort == 1 and spec.train.dropout == 0
    if white and central and math.isfinite(spec.privacy.epsilon):
        return "dirac", a.surface
    return black_box


def with_strongest_canary(spec: CellSpec) -> CellSpec:
    """`spec` with audit.canary = "auto" resolved (see `strongest_canary`); else unchanged."""
    if spec.audit.canary != "auto":
        return spec
    canary, surface = strongest_canary(spec)
    return spec.model_copy(update={"audit": spec.audit.model_copy(
        update={"canary": canary, "surface": surface})})


class SuiteSpec(CellSpec):
    """A suite file: a cell spec plus an optional `[sweep]` grid of dotted field paths."""

    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    max_memory_gb: float | None = Field(
        None, gt=0, description="refuse, before training, a cell whose memory estimate "
        "(privbench.limits) exceeds this many GB; not part of a cell's content hash")


def consistency_problems(spec: CellSpec) -> list[str]:
    """Cross-field checks that a single field's type cannot express."""
    spec = with_strongest_canary(spec)  # a suite's "auto", as each of its cells resolves it
    problems = []
    if spec.train.cohort > spec.data.clients:
        problems.append(
            f"train.cohort = {_show(spec.train.cohort)}: must be at most data.clients "
            f"({spec.data.clients}); lower the cohort or raise the client count"
        )
    problems += _data_field_problems(spec.data)
    from privbench.stream_task import stream_problems  # data.name = "stream": cohort reads

    problems += stream_problems(spec)
    if spec.task != "tabular":  # every trainer option applies; data, model and scorers differ
        from privbench.governance import governance_problems
        from privbench.lm.checks import lm_problems

        return (problems + lm_problems(spec) + privacy_problems(spec) + _secagg_problems(spec)
                + governance_problems(spec))
    if (DATA_SETS.get(spec.data.name).kind != "tabular" or spec.model.name == "tiny_gpt2"
            or spec.model.path):
        return [*problems, f"task = {spec.task!r}: takes data.name "
                f"{', '.join(names_of('tabular'))} and model.name mlp, cnn or factory without "
                "model.path; set task = \"causal_lm\" for text"]
    from privbench.data import data_shape  # the data module imports this one
    from privbench.errors import PrivbenchError
    from privbench.models.zoo import spec_problems

    try:
        shape = data_shape(spec.data)  # a user's files: read once, checked, split
    except PrivbenchError as e:
        return [*problems, str(e)]
    if shape.clients is not None:
        problems += _named_clients_problems(spec.data, shape.clients)
    if model_problems := spec.model.problems() or spec_problems(spec.model, spec.data):
        return problems + model_problems
    from privbench.models.checks import design_problems

    problems += design_problems(spec, shape.n_features, shape.n_classes)
    inversion = spec.attacks.inversion
    if inversion.enabled and max(inversion.rounds) > spec.train.rounds:
        problems.append(
            f"attacks.inversion.rounds = {inversion.rounds}: every round must be at most "
            f"train.rounds ({spec.train.rounds}); drop the later rounds"
        )
    held = spec.data.test_fraction + spec.data.population_fraction
    n_train = shape.n_train
    if held < 0.9 and spec.data.clients > n_train:
        problems.append(
            f"data.clients = {spec.data.clients}: must be at most the {n_train} training records "
            f"of {shape.source}; lower data.clients"
        )
    problems += privacy_problems(spec)
    if held >= 0.9:
        problems.append(
            f"data.test_fraction + data.population_fraction = "
            f"{spec.data.test_fraction + spec.data.population_fraction:g}: must be below 0.9 "
            "so that records remain for training"
        )
    problems += _secagg_problems(spec)
    problems += audit_problems(spec)
    problems += _attack_problems(spec.attacks)
    from privbench.governance import governance_problems  # [governance] registry, personal

    problems += governance_problems(spec)
    return problems


# [data] fields that only some data sets read: (field, default, the data set that reads it).
_TABLES = ("table", "stream")
_FILE_FIELDS = (("format", "auto", _TABLES), ("label", "label", _TABLES),
                ("client", None, _TABLES), ("features", [], _TABLES),
                ("image_size", None, ("images",)))


def _data_field_problems(data: DataSpec) -> list[str]:
    """A user-file field set for a data set that does not read it, or a path for a built-in."""
    problems = [f"data.{name} = {_show(getattr(data, name))}: only data.name = "
                f"{' or '.join(map(repr, readers))} reads it (data.name = {data.name!r}); drop "
                f"data.{name}" for name, default, readers in _FILE_FIELDS
                if getattr(data, name) != default and data.name not in readers]
    if data.path is not None and not DATA_SETS.get(data.name).path:
        problems.append(f"data.path = {data.path!r}: data.name = {data.name!r} is built in and "
                        "reads no file; set data.name = 'table' (CSV, Parquet), 'images' or "
                        "'jsonl', or drop data.path")
    return problems


def _named_clients_problems(data: DataSpec, n_clients: int) -> list[str]:
    """When the user's records name their clients, the spec's client count must agree."""
    column = f"column {data.client!r}" if data.client else "client folders"
    source = Path(data.path or "").name
    problems = []
    if data.clients != n_clients:
        problems.append(f"data.clients = {data.clients}: {source} names {n_clients} clients "
                        f"({column}); set data.clients = {n_clients}")
    if data.partition != "iid":
        problems.append(f"data.partition = {data.partition!r}: {source} names each record's "
                        f"client ({column}); drop data.partition")
    return problems


def _secagg_problems(spec: CellSpec) -> list[str]:
    """[secagg] checks: bits must fit the modulus; distributed DP needs a DP target."""
    sa, problems = spec.secagg, []
    if sa.bits >= sa.modulus_bits:
        problems.append(f"secagg.bits = {sa.bits}: must be below secagg.modulus_bits "
                        f"({sa.modulus_bits}) to leave room for the sum; lower secagg.bits")
    if sa.distributed_dp and math.isinf(spec.privacy.epsilon):
        problems.append("secagg.distributed_dp = true: needs a finite privacy.epsilon; "
                        "set privacy.epsilon or turn distributed_dp off")
    if sa.groups == 1:
        problems.append("secagg.groups = 1: use 0 for one level or at least 2 groups")
    if sa.enabled and (spec.privacy.unit != "client" or spec.privacy.setting != "central"
                       or spec.privacy.noise_schedule or spec.privacy.adaptive_clip):
        problems.append("secagg.enabled = true: secure aggregation sums client-level updates "
                        "under one noise level; use privacy.unit = 'client', setting = 'central', "
                        "no noise_schedule and no adaptive_clip")
    return problems


def privacy_problems(spec: CellSpec) -> list[str]:
    """Combinations of privacy and training fields that cannot be trained or accounted honestly."""
    p, t = spec.privacy, spec.train
    private = math.isfinite(p.epsilon)
    problems = []
    central_clients = private and p.unit == "client" and p.setting == "central"
    if central_clients and t.sampling == "shuffle":
        problems.append("train.sampling = 'shuffle': no accountant here gives client-level "
                        "central DP for shuffled cohorts; use 'poisson' or 'fixed_cohort'")
    if central_clients and t.sampling == "fixed_cohort" and p.neighbouring != "replace_one":
        problems.append("train.sampling = 'fixed_cohort': sampling without replacement is "
                        "accounted for privacy.neighbouring = 'replace_one' only; set it")
    if central_clients and t.sampling == "fixed_cohort" and t.cohort != int(t.cohort):
        problems.append(f"train.cohort = {_show(t.cohort)}: a fixed cohort is a whole number "
                        "of clients")
    if p.adaptive_clip and not (private and p.unit == "client" and p.setting == "central"):
        problems.append("privacy.adaptive_clip = true: adaptive clipping is implemented for "
                        "client-level central DP only; set privacy.unit = 'client' and "
                        "privacy.setting = 'central'")
    if private and p.setting == "local" and p.neighbouring != "replace_one":
        problems.append("privacy.setting = 'local': a local guarantee is between any two data "
                        "sets of one client; set privacy.neighbouring = 'replace_one'")
    if p.unit == "example" and p.setting == "local":
        problems.append("privacy.setting = 'local': local DP is a client-level setting; "
                        "example-level DP-SGD already runs inside each client")
    return problems


# The audit designs: (surface, canary) -> the modes that can certify it.
AUDIT_DESIGNS = {
    ("final_model", "mislabelled"): {"one-run"},
    ("final_model", "ood"): {"one-run"},
    ("final_weights", "random-unit"): {"one-run", "fl-one-shot"},
    ("iterates", "random-unit"): {"one-run"},
    ("final_weights", "dirac"): {"one-run", "multi-run"},
    ("iterates", "dirac"): {"one-run", "multi-run"},
}


def audit_problems(spec: CellSpec) -> list[str]:
    """Checks of the [audit] table against the surfaces, canaries and data it needs."""
    a = spec.audit
    if not a.enabled:
        return []
    if spec.privacy.unit != "client" and a.canary == "random-unit":
        return ["audit.canary = 'random-unit': canary clients audit client-level DP; use "
                "privacy.unit = 'client', or 'dirac' gradient canaries for example-level DP-SGD"]
    if a.canary == "dirac":
        if spec.privacy.unit != "example":
            return ["audit.canary = 'dirac': gradient canaries enter example-level DP-SGD; set "
                    "privacy.unit = 'example' or use 'random-unit' canary clients"]
        if spec.data.clients != 1 or spec.train.cohort != 1 or spec.train.dropout > 0:
            return ["audit.canary = 'dirac': Dirac canaries audit centralised DP-SGD, one client "
                    "training every round; set data.clients = 1, train.cohort = 1 and "
                    "train.dropout = 0"]
    surfaces = sorted({s for s, _ in AUDIT_DESIGNS})
    if a.surface not in surfaces:
        return [f"audit.surface = {a.surface!r}: no canary audit reads it yet; use one of "
                f"{', '.join(surfaces)}"]
    canaries = sorted(c for s, c in AUDIT_DESIGNS if s == a.surface)
    problems = []
    if a.canary not in canaries:
        problems.append(f"audit.canary = {a.canary!r}: the {a.surface} surface needs "
                        f"{' or '.join(repr(c) for c in canaries)} canaries")
    elif a.mode not in (modes := AUDIT_DESIGNS[(a.surface, a.canary)]):
        problems.append(f"audit.mode = {a.mode!r}: {a.canary} canaries on the {a.surface} "
                        f"surface support {' or '.join(repr(m) for m in sorted(modes))}")
    if a.estimator in ("gauss-sum", "fdp") and (
            a.mode != "one-run" or a.surface == "final_model"):
        problems.append(f"audit.estimator = {a.estimator!r}: a white-box one-run bound; use "
                        "mode = 'one-run' on final_weights or iterates, or estimator = 'auto'")
    if a.canary == "mislabelled":
        from privbench.data import data_shape

        n_pop = data_shape(spec.data).n_pop
        if a.n_canaries > n_pop:
            problems.append(f"audit.n_canaries = {a.n_canaries}: mislabelled canaries come from "
                            f"the ~{n_pop} population records; lower it or use canary = 'ood'")
    return problems


def _attack_problems(attacks: AttacksSpec) -> list[str]:
    problems = []
    k = attacks.shadows.models
    if attacks.lira.enabled and k < 2:
        problems.append(f"attacks.shadows.models = {k}: LiRA needs at least 2 shadow models "
                        "(each record IN some and OUT of others); raise it, e.g. to 16")
    if attacks.rmia.enabled and attacks.rmia.references > k:
        problems.append(f"attacks.rmia.references = {attacks.rmia.references}: must be at most "
                        f"attacks.shadows.models ({k}); lower it or train more shadows")
    refs = attacks.rmia.references or k
    if attacks.rmia.enabled and attacks.rmia.mode == "offline" and refs < 2:
        problems.append(f"attacks.rmia.references = {refs}: offline RMIA needs at least 2 "
                        "reference models so every record has one trained without it")
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
        path = prefix + ".".join(shown_key(p) for p in err["loc"])
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
        value = err.get("input")
        shown = repr(value) if kind.endswith("_type") and isinstance(value, float) else _show(value)
        lines.append(f"{path} = {shown}: {msg}")
    return lines


def shown_key(part: Any) -> str:
    """A key (or dotted path) as it appears in a message: as is when it is a plain name, else
    quoted, so that a key holding a newline or a quote cannot break the one-line message."""
    text = str(part)
    return text if re.fullmatch(r"[\w@.+-]+", text) else repr(text)


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
