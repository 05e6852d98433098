"""The suite spec's schema: one pydantic model per TOML table, and the cell and suite specs.

Field types carry what one field can say (ranges, allowed names from the registries); what
depends on several fields is checked in `privbench/spec/checks.py`, and files are read in
`privbench/spec/load.py`. The attack and audit tables are in `attack_schema.py`, the language-
model table in `lm_schema.py`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from privbench.data.registry import DATA_SETS, NAMES, names_of
from privbench.spec.attack_schema import AttacksSpec, AuditSpec
from privbench.spec.base import StrictModel
from privbench.spec.lm_schema import LMSpec
from privbench.trainers.mechanisms import SETTINGS

# Derived from the data-set registry (privbench/data/registry.py): records in each built-in tabular
# data set, so that a spec can be checked before anything loads, and the text data sets.
DATASET_SIZES = {n: i.records for n, i in DATA_SETS.items() if i.kind == "tabular" and i.records}
TEXT_DATASETS = names_of("text")


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


class ClientsSpec(StrictModel):
    """[governance] The client registry (privbench.governance.consent): only clients that consented
    to
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
    client, never sent or aggregated) and fine-tuned personal heads
    (privbench.governance.personal)."""

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
      client, a finite epsilon) and for a fully fine-tuned language model (records of random
      clients, with or without DP: its position-embedding rows past the longest record, or an
      untied model's embeddings of unused tokens, are coordinates no record moves, where the
      canaries stand out as secrets in text do not); else secret canaries on the released
      model (language models: LoRA has no such coordinates) or mislabelled records.
    """
    a = spec.audit
    white = a.surface in ("iterates", "final_weights")
    black_box = ("secret" if spec.task == "causal_lm" else "mislabelled", "final_model")
    if spec.privacy.unit == "client":
        return ("random-unit", a.surface) if white else black_box
    central = spec.data.clients == 1 and spec.train.cohort == 1 and spec.train.dropout == 0
    full_lm = spec.task != "tabular" and spec.lm.finetune == "full"
    if white and (full_lm or (central and math.isfinite(spec.privacy.epsilon))):
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
        "(privbench.spec.limits) exceeds this many GB; not part of a cell's content hash")

