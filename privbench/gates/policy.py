"""Policy gates: a TOML policy checked before training (refuse a spec) and after (gate a run).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privbench.attacks.membership.metrics import fpr_metric_name
from privbench.data.registry import DATA_SETS
from privbench.errors import PrivbenchError, SpecError
from privbench.run.results import CellResult, MetricRow
from privbench.scoring import is_membership, row_scorer_problem
from privbench.spec.load import format_validation_error, read_toml, shown_key
from privbench.spec.schema import CellSpec

Status = Literal["pass", "fail", "warn", "no data", "exempt"]
# Utility metrics that are fractions: a threshold outside [0, 1] is a mistake, not a gate.
FRACTION_METRICS = ("utility.accuracy", "utility.next_token_accuracy")


class PolicyError(PrivbenchError):
    """A spec that breaks the policy, refused before training: one line per broken gate."""

    def __init__(self, source: str, problems: list[str]):
        self.source, self.problems = source, problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
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
        problems.append(f"utility.min = {_fmt(utility.min)}: {utility.metric} lies in [0, 1]; "
                        "give a value in [0, 1]")
    if utility.max_drop is not None and utility.max_drop > 1:
        problems.append(f"utility.max_drop = {_fmt(utility.max_drop)}: {utility.metric} lies in "
                        "[0, 1], so it cannot drop by more than 1; give a value in [0, 1]")
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


def privacy_units(spec: CellSpec) -> int:
    """n in "delta at most 1/n": the number of clients, or of training records for example DP.

    A text data set's units are counted from the text itself (generated messages with their
    canaries, or a folder's files), which loads in well under a second and trains nothing.
    """
    if DATA_SETS.get(spec.data.name).kind == "text":
        from privbench.data.text_clients import load_text_data

        data = load_text_data(spec.data, spec.lm, spec.seed)
        return data.n_clients if spec.privacy.unit == "client" else len(data.train_texts)
    if spec.privacy.unit == "client":
        return spec.data.clients
    from privbench.data.splits import data_shape  # a user's table or images: counted from the split

    return data_shape(spec.data).n_train


def check_spec(cells: list[Any], policy: Policy) -> list[str]:
    """Problems of a suite's cells against the policy, found before anything trains."""
    problems = []
    for cell in cells:
        spec: CellSpec = cell.spec
        no_dp = math.isinf(spec.privacy.epsilon)
        if no_dp and policy.allow_no_dp_baseline:
            continue
        cap = policy.privacy.max_epsilon
        if cap is not None and spec.privacy.epsilon > cap:
            problems.append(
                f"cell {cell.label}: privacy.epsilon = {_fmt(spec.privacy.epsilon)} is above "
                f"privacy.max_epsilon = {_fmt(cap)} (gate max_epsilon, margin "
                f"{_fmt(cap - spec.privacy.epsilon)}); lower privacy.epsilon"
                + ("" if not no_dp else " or set allow_no_dp_baseline = true in the policy"))
        if policy.privacy.delta_at_most_one_over_n and not no_dp:
            n = privacy_units(spec)
            if spec.privacy.delta > 1.0 / n:
                problems.append(
                    f"cell {cell.label}: privacy.delta = {_fmt(spec.privacy.delta)} is above "
                    f"1/n = {_fmt(1.0 / n)} for n = {n} {spec.privacy.unit}s (gate "
                    f"delta_at_most_one_over_n); lower privacy.delta")
    if policy.utility.baseline is not None and not (policy.utility.baseline
                                                    / "results.json").exists():
        problems.append(f"utility.baseline = {str(policy.utility.baseline)!r}: no results.json "
                        "there; run the baseline suite first or fix the path")
    return problems


def refuse_if_broken(cells: list[Any], policy: Policy) -> None:
    """Raise PolicyError naming each broken gate, so nothing trains against the policy."""
    problems = check_spec(cells, policy)
    if problems:
        raise PolicyError(policy.source, problems)


# ---------------------------------------------------------------------------------------------
# After training


@dataclass(frozen=True)
class GateResult:
    """One gate on one cell: what it demands, what was measured and the margin left."""

    gate: str
    cell: str
    threshold: str
    measured: float | None
    margin: float | None
    status: Status
    note: str = ""

    def line(self) -> str:
        margin = "—" if self.margin is None else _fmt(self.margin)
        measured = "—" if self.measured is None else _fmt(self.measured)
        text = (f"{self.gate} [{self.cell}]: {self.status.upper()} measured {measured}, "
                f"threshold {self.threshold}, margin {margin}")
        return text + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class GateReport:
    """Every gate result of a run against one policy, and the verdict."""

    policy: str
    results: list[GateResult]

    @property
    def verdict(self) -> Literal["PASS", "WARN", "FAIL"]:
        statuses = {r.status for r in self.results}
        if "fail" in statuses:
            return "FAIL"
        if statuses & {"warn", "no data"}:
            return "WARN"
        return "PASS"

    @property
    def failures(self) -> list[GateResult]:
        return [r for r in self.results if r.status == "fail"]

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "verdict": self.verdict,
                "results": [r.__dict__ for r in self.results]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateReport:
        """The report as gates.json stores it (its verdict is recomputed from the results)."""
        from privbench.run.results import json_restore

        data = json_restore(data)
        return cls(data["policy"], [GateResult(**r) for r in data["results"]])


def evaluate(cells: list[CellResult], policy: Policy) -> GateReport:
    """Check every cell of a finished run against every gate the policy sets."""
    baseline = _load_baseline(policy.utility.baseline) if policy.utility.baseline else None
    results: list[GateResult] = []
    for cell in cells:
        if cell.status != "ok" or not cell.claim:
            results.append(GateResult("cell finished", cell.label, "status ok", None, None,
                                      "fail", cell.error or "no result"))
            continue
        if not math.isfinite(cell.claim["epsilon"]) and policy.allow_no_dp_baseline:
            results.append(GateResult("no-DP baseline", cell.label, "exempt", None, None,
                                      "exempt", "allow_no_dp_baseline"))
            continue
        results += _cell_gates(cell, policy, baseline)
    return GateReport(policy=policy.source, results=results)


def _cell_gates(cell: CellResult, policy: Policy,
                baseline: dict[str, CellResult] | None) -> list[GateResult]:
    out = []
    claim = cell.claim or {}
    eps = float(claim["epsilon"])
    cap = policy.privacy.max_epsilon
    if cap is not None:
        out.append(_upper("max_epsilon", cell.label, eps, cap, "claimed ε (PLD)"))
    if policy.privacy.delta_at_most_one_over_n:
        n = privacy_units(CellSpec.model_validate(cell.spec))
        out.append(_upper("delta_at_most_one_over_n", cell.label, float(claim["delta"]), 1.0 / n,
                          f"1/n, n = {n}"))
    if policy.audit.eps_lb_not_above_claim:
        out.append(_eps_lb_gate(cell, eps, policy.audit.confidence))
    tpr_cap = policy.attacks.max_tpr_at_fpr_1e3
    if tpr_cap is not None:
        out.append(_tpr_gate(cell, tpr_cap))
    scorer, _, metric = policy.utility.metric.partition(".")
    row = cell.metric(scorer, metric)
    if policy.utility.min is not None:
        if row is None:
            out.append(_no_data("min_utility", cell.label, f"≥ {_fmt(policy.utility.min)}",
                                f"no {policy.utility.metric} row"))
        else:
            out.append(_lower("min_utility", cell.label, row.value, policy.utility.min,
                              policy.utility.metric))
    if policy.utility.max_drop is not None and baseline is not None:
        out.append(_drop_gate(cell, row, baseline, policy.utility.max_drop, policy.utility.metric))
    return out


def _upper(gate: str, cell: str, measured: float, cap: float, what: str) -> GateResult:
    margin = cap - measured
    ok = measured <= cap
    return GateResult(gate, cell, f"≤ {_fmt(cap)} ({what})", measured,
                      margin if math.isfinite(margin) else -math.inf, "pass" if ok else "fail")


def _lower(gate: str, cell: str, measured: float, floor: float, what: str) -> GateResult:
    return GateResult(gate, cell, f"≥ {_fmt(floor)} ({what})", measured, measured - floor,
                      "pass" if measured >= floor else "fail")


def _no_data(gate: str, cell: str, threshold: str, note: str) -> GateResult:
    return GateResult(gate, cell, threshold, None, None, "no data", note)


def _eps_lb_gate(cell: CellResult, eps: float, confidence: float) -> GateResult:
    row = cell.metric("audit", "eps_lb")
    threshold = f"≤ claimed ε {_fmt(eps)} at {confidence:.0%}"
    if row is None:
        return _no_data("eps_lb_not_above_claim", cell.label, threshold, "no audit eps_lb row")
    result = _upper("eps_lb_not_above_claim", cell.label, row.value, eps, "claimed ε")
    alpha = row.details.get("alpha")
    if result.status == "pass" and alpha is not None and 1 - float(alpha) < confidence - 1e-12:
        return GateResult(result.gate, cell.label, threshold, row.value, result.margin, "warn",
                          f"audit ran at {1 - float(alpha):.0%} confidence, below {confidence:.0%}")
    if result.status == "pass" and row.details.get("verdict") == "TOO_SMALL":
        # No outcome of this design could have exceeded the claim: not evidence that it holds.
        ceiling = cell.metric("audit", "eps_ceiling")
        reach = "" if ceiling is None else f" (its ceiling {_fmt(ceiling.value)} ≤ claimed ε)"
        return GateResult(result.gate, cell.label, threshold, row.value, result.margin, "warn",
                          f"TOO_SMALL: the audit could not test the claim{reach}")
    return GateResult(result.gate, cell.label, threshold, row.value, result.margin, result.status,
                      str(row.details.get("verdict", "")))


def _tpr_gate(cell: CellResult, cap: float) -> GateResult:
    name = fpr_metric_name(1e-3)
    rows = [m for m in cell.metrics if m.metric == name and is_membership(m.scorer)]
    threshold = f"≤ {_fmt(cap)} (TPR @ FPR 1e-3, every attack)"
    if not rows:
        return _no_data("max_tpr_at_fpr_1e-3", cell.label, threshold, "no membership attack rows")
    worst = max(rows, key=lambda m: m.value)
    result = _upper("max_tpr_at_fpr_1e-3", cell.label, worst.value, cap, "")
    return GateResult(result.gate, cell.label, threshold, worst.value, result.margin,
                      result.status, f"strongest attack: {worst.scorer} on {worst.surface}")


def _drop_gate(cell: CellResult, row: MetricRow | None, baseline: dict[str, CellResult],
               max_drop: float, metric: str) -> GateResult:
    threshold = f"drop ≤ {_fmt(max_drop)} ({metric} vs baseline)"
    base = baseline.get(cell.label) or baseline.get(cell.key)
    if base is None and len(baseline) == 1:
        base = next(iter(baseline.values()))
    scorer, _, name = metric.partition(".")
    base_row = base.metric(scorer, name) if base is not None else None
    if row is None or base_row is None:
        return _no_data("max_utility_drop", cell.label, threshold,
                        "no matching baseline cell or metric row")
    drop = base_row.value - row.value
    return GateResult("max_utility_drop", cell.label, threshold, drop, max_drop - drop,
                      "pass" if drop <= max_drop else "fail",
                      f"baseline {_fmt(base_row.value)} ({base.label})")


def _load_baseline(run_dir: Path) -> dict[str, CellResult]:
    """The baseline run's finished cells by key and label; a baseline that does not verify is
    refused, since a forged baseline would hide a utility drop."""
    from privbench.governance.audit_trail import require_verified

    path = Path(run_dir) / "results.json"
    if not path.exists():
        raise PrivbenchError(f"utility.baseline = {str(run_dir)!r}: no results.json there; run "
                             "the baseline suite first or fix the path")
    require_verified(run_dir, "the utility.baseline gate")
    cells = load_cells(run_dir)
    ok = [c for c in cells if c.status == "ok"]
    return {**{c.key: c for c in ok}, **{c.label: c for c in ok}}


def load_cells(run_dir: Path) -> list[CellResult]:
    """The cell results of a finished run folder (its results.json, opened with the run key
    when the run is encrypted)."""
    from privbench.run.results import read_json

    path = Path(run_dir) / "results.json"
    if not path.exists():
        raise PrivbenchError(f"{run_dir}: no results.json; give a run folder written by "
                             "`privbench suite`")
    data = read_json(path)
    return [CellResult.from_dict(c) for c in data["cells"]]


def write_gate_report(run_dir: Path, report: GateReport) -> Path:
    """Store the gate results beside the run's results, for the report and for CI artifacts."""
    from privbench.run.results import write_json

    path = Path(run_dir) / "gates.json"
    write_json(path, report.to_dict())
    return path


def record_verdict(run_dir: Path, suite: Any, cells: list[CellResult], report: GateReport,
                   signing_key: Any = None) -> None:
    """Write gates.json and the report with the verdict, hash both into the run manifest, and
    sign the verdict (privbench.governance.signatures).

    Args:
        run_dir: a finished run folder (verified by the caller).
        suite: its privbench.spec.suite.Suite.
        cells: its cell results.
        report: the GateReport to record.
        signing_key: an Ed25519 private key to sign gates.json with; without one, a gates
            signature that would be stale is removed.
    """
    from privbench.governance.signatures import resign_gates
    from privbench.report.render import write_report
    from privbench.run.manifest import record_run

    write_gate_report(run_dir, report)
    write_report(Path(run_dir), suite, cells, gates=report)
    record_run(run_dir, files=("gates.json", "index.html"))
    resign_gates(run_dir, signing_key)


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
        return f"{value:.3g}"
    return f"{value:.4g}"
