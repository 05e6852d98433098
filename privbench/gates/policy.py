"""Policy gates: a TOML policy, checked before training (precheck.py: refuse a spec) and after
(evaluate.py: gate a run). This module holds its schema and its loading.

A policy file looks like this (every table and key is optional):

    name = "release policy"
    allow_no_dp_baseline = true     # cells trained without DP are reference points, not gated

    [privacy]
    max_epsilon = 8.0               # claimed (PLD) epsilon of every cell
    delta_at_most_one_over_n = true # delta <= 1/n, n = privacy units (clients or records)

    [audit]
    eps_lb_not_above_claim = true   # the empirical lower bound must not exceed the claim
    confidence = 0.95               # ... measured at this confidence or higher

    [attacks]
    max_tpr_at_fpr_1e-3 = 0.05      # every membership attack's TPR at FPR 1e-3

    [utility]
    metric = "utility.accuracy"     # scorer.metric, higher is better
    min = 0.8
    max_drop = 0.05                 # against the same cell of the baseline run
    baseline = "reports/baseline"   # a run folder; relative to the policy file

Each gate yields one `GateResult` per cell: threshold, measured value, margin (positive = room
left, negative = by how much it failed) and a status: pass, fail, or "no data" (the run has no
row the gate needs). The verdict is FAIL if any gate fails, WARN if a gate had no data or a
measurement is weaker than asked (e.g. an audit at a lower confidence), else PASS.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privbench.errors import PrivbenchError, SpecError
from privbench.scoring import row_scorer_problem
from privbench.spec.load import format_validation_error, read_toml, shown_key

Status = Literal["pass", "fail", "warn", "no data", "exempt"]
# Utility metrics that are fractions: a threshold outside [0, 1] is a mistake, not a gate.
FRACTION_METRICS = ("utility.accuracy", "utility.next_token_accuracy")


class PolicyError(PrivbenchError):
    """A spec that breaks the policy, refused before training: one line per broken gate."""

    def __init__(self, source: str, problems: list[str]):
        self.source, self.problems = source, problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per broken gate, each prefixed with the policy's source."""
        return [f"policy {self.source}: {p}" for p in self.problems]


class _Strict(BaseModel):
    """Unknown keys are errors; values keep their TOML type (no "8" for 8); no inf or nan
    except where a field allows it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True,
                              allow_inf_nan=False)


class PrivacyPolicy(_Strict):
    """Gates on the Claim."""

    max_epsilon: float | None = Field(None, gt=0, allow_inf_nan=True)
    delta_at_most_one_over_n: bool = False


class AuditPolicy(_Strict):
    """Gate on the empirical epsilon lower bound (scorer "audit", metric "eps_lb")."""

    eps_lb_not_above_claim: bool = False
    confidence: float = Field(0.95, gt=0, lt=1)


class AttacksPolicy(_Strict):
    """Gate on membership inference at a low false-positive rate."""

    max_tpr_at_fpr_1e3: float | None = Field(None, ge=0, le=1, alias="max_tpr_at_fpr_1e-3")


class UtilityPolicy(_Strict):
    """Gates on utility: an absolute floor and a drop against a baseline run."""

    metric: str = Field("utility.accuracy", pattern=r"^[A-Za-z0-9_]+\.[A-Za-z0-9_@.+-]+$")
    min: float | None = None
    max_drop: float | None = Field(None, ge=0)
    baseline: Path | None = Field(None, strict=False)  # a TOML string, read as a path


class Policy(_Strict):
    """A team's release policy for models trained and scored by privbench."""

    name: str = "policy"
    allow_no_dp_baseline: bool = False
    privacy: PrivacyPolicy = Field(default_factory=PrivacyPolicy)
    audit: AuditPolicy = Field(default_factory=AuditPolicy)
    attacks: AttacksPolicy = Field(default_factory=AttacksPolicy)
    utility: UtilityPolicy = Field(default_factory=UtilityPolicy)
    source: str = Field("policy", exclude=True)


def load_policy(path: Path | str) -> Policy:
    """Read and validate a policy TOML; a bad key or value is a one-line error naming it."""
    path = Path(path)
    raw = read_toml(path)
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as e:
        raise SpecError(str(path), _policy_problems(e)) from None
    policy.source = str(path)
    base = policy.utility.baseline
    if base is not None and not base.is_absolute():
        policy.utility.baseline = (path.parent / base).resolve()
    if policy.utility.max_drop is not None and policy.utility.baseline is None:
        raise SpecError(str(path), ["utility.max_drop is set but utility.baseline is not; give "
                                    "the baseline run folder to compare against"])
    problems = _interval_problems(policy.utility)
    unknown = row_scorer_problem("utility.metric", policy.utility.metric)
    problems += [unknown] if unknown else []
    if problems:
        raise SpecError(str(path), problems)
    return policy


def _interval_problems(utility: UtilityPolicy) -> list[str]:
    """Thresholds outside the interval their metric lives in: such a gate could never pass (or
    never fail), so it is a mistake in the policy, not a verdict on the run."""
    if utility.metric not in FRACTION_METRICS:
        return []
    problems = []
    if utility.min is not None and not 0 <= utility.min <= 1:
        problems.append(f"utility.min = {format_number(utility.min)}: {utility.metric} lies "
                        "in [0, 1]; give a value in [0, 1]")
    if utility.max_drop is not None and utility.max_drop > 1:
        problems.append(f"utility.max_drop = {format_number(utility.max_drop)}: "
                        f"{utility.metric} lies in [0, 1], so it cannot drop by more than 1; "
                        "give a value in [0, 1]")
    return problems


def _policy_problems(error: ValidationError) -> list[str]:
    """The spec's one-line messages, with a policy table's own keys listed for an unknown key."""
    lines = []
    for err, line in zip(error.errors(), format_validation_error(error), strict=True):
        if err["type"] != "extra_forbidden":
            lines.append(line)
            continue
        model: type[BaseModel] = Policy
        for part in err["loc"][:-1]:
            model = model.model_fields[str(part)].annotation  # type: ignore[assignment]
        allowed = [f.alias or name for name, f in model.model_fields.items() if name != "source"]
        path = ".".join(shown_key(p) for p in err["loc"])
        lines.append(f"{path}: unknown key; allowed keys: {', '.join(allowed)}")
    return lines


# ---------------------------------------------------------------------------------------------
# Before training


# ---------------------------------------------------------------------------------------------
# After training


def format_number(value: float) -> str:
    """A number as the gates print it: 4 significant digits, 3 when tiny or huge, ∞."""
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
        return f"{value:.3g}"
    return f"{value:.4g}"
