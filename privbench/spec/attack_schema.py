"""The [attacks] and [audit] tables of a spec: which attacks score a cell, and its audit design."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
)

from privbench.spec.base import StrictModel


class LossAttackSpec(StrictModel):
    """The LOSS membership-inference attack (Yeom et al.): score = -loss."""

    enabled: bool = True


class ShadowSpec(StrictModel):
    """Shadow (reference) models for LiRA and RMIA: trained like the target, on the audit pool,
    each record included in half of them, as one batched model; cached by content hash."""

    models: int = Field(16, ge=1, description="number of shadow models trained")
    cells: Literal["all", "no_dp", "example_no_dp"] = Field(
        "all", description="the cells that train shadows (each costs K trainings of the "
        "target): all; no_dp: those without DP (privacy.epsilon = inf), where the attacks have "
        "the most to find; example_no_dp: those without DP whose privacy.unit is 'example' (a "
        "record is the unit the attacks test)")


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
    secret: Literal["digits", "rare-tokens"] = Field(
        "digits", description="secret canaries (language models): digits = lm.canaries.digits "
        "random digits; rare-tokens = audit.secret_tokens of the tokenizer's rarest whole words "
        "on public text, none shared (designed canaries, Panda et al. 2025)")
    secret_tokens: int = Field(1, ge=1, le=8, description="rare-tokens: word tokens per secret")
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


