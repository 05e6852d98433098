"""Gates after training: each policy gate on each finished cell (threshold, measured value, margin,
status), the run's verdict, and gates.json."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from privbench.attacks.membership.metrics import fpr_metric_name
from privbench.errors import PrivbenchError
from privbench.gates.policy import Policy, Status, format_number
from privbench.gates.precheck import privacy_units
from privbench.run.results import CellResult, MetricRow
from privbench.scoring import is_membership
from privbench.spec.schema import CellSpec


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
        """The result in one line (gate, cell, status, measured, threshold, margin, note)."""
        margin = "—" if self.margin is None else format_number(self.margin)
        measured = "—" if self.measured is None else format_number(self.measured)
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
        """FAIL if any gate failed, WARN if any warned or had no data, else PASS."""
        statuses = {r.status for r in self.results}
        if "fail" in statuses:
            return "FAIL"
        if statuses & {"warn", "no data"}:
            return "WARN"
        return "PASS"

    @property
    def failures(self) -> list[GateResult]:
        """The results whose status is "fail", in order."""
        return [r for r in self.results if r.status == "fail"]

    def to_dict(self) -> dict[str, Any]:
        """The report as gates.json stores it: policy, verdict and every result's fields."""
        return {"policy": self.policy, "verdict": self.verdict,
                "results": [r.__dict__ for r in self.results]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateReport:
        """The report as gates.json stores it (its verdict is recomputed from the results)."""
        from privbench.run.results import json_restore

        data = json_restore(data)
        return cls(data["policy"], [GateResult(**r) for r in data["results"]])


def evaluate(cells: list[CellResult], policy: Policy) -> GateReport:
    """Check every cell of a finished run against every gate the policy sets.

    A cell that did not finish fails the "cell finished" gate; a no-DP cell is exempt when the
    policy allows a no-DP baseline.

    Args:
        cells: the run's cells; policy: the loaded policy (its baseline run is read if set).
    Returns:
        The GateReport, one result per (gate, cell).
    """
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
            out.append(_no_data("min_utility", cell.label, f"≥ {format_number(policy.utility.min)}",
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
    return GateResult(gate, cell, f"≤ {format_number(cap)} ({what})", measured,
                      margin if math.isfinite(margin) else -math.inf, "pass" if ok else "fail")


def _lower(gate: str, cell: str, measured: float, floor: float, what: str) -> GateResult:
    return GateResult(gate, cell, f"≥ {format_number(floor)} ({what})", measured, measured - floor,
                      "pass" if measured >= floor else "fail")


def _no_data(gate: str, cell: str, threshold: str, note: str) -> GateResult:
    return GateResult(gate, cell, threshold, None, None, "no data", note)


def _eps_lb_gate(cell: CellResult, eps: float, confidence: float) -> GateResult:
    row = cell.metric("audit", "eps_lb")
    threshold = f"≤ claimed ε {format_number(eps)} at {confidence:.0%}"
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
        reach = ("" if ceiling is None
                 else f" (its ceiling {format_number(ceiling.value)} ≤ claimed ε)")
        return GateResult(result.gate, cell.label, threshold, row.value, result.margin, "warn",
                          f"TOO_SMALL: the audit could not test the claim{reach}")
    return GateResult(result.gate, cell.label, threshold, row.value, result.margin, result.status,
                      str(row.details.get("verdict", "")))


def _tpr_gate(cell: CellResult, cap: float) -> GateResult:
    name = fpr_metric_name(1e-3)
    rows = [m for m in cell.metrics if m.metric == name and is_membership(m.scorer)]
    threshold = f"≤ {format_number(cap)} (TPR @ FPR 1e-3, every attack)"
    if not rows:
        return _no_data("max_tpr_at_fpr_1e-3", cell.label, threshold, "no membership attack rows")
    worst = max(rows, key=lambda m: m.value)
    result = _upper("max_tpr_at_fpr_1e-3", cell.label, worst.value, cap, "")
    return GateResult(result.gate, cell.label, threshold, worst.value, result.margin,
                      result.status, f"strongest attack: {worst.scorer} on {worst.surface}")


def _drop_gate(cell: CellResult, row: MetricRow | None, baseline: dict[str, CellResult],
               max_drop: float, metric: str) -> GateResult:
    threshold = f"drop ≤ {format_number(max_drop)} ({metric} vs baseline)"
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
                      f"baseline {format_number(base_row.value)} ({base.label})")


def _load_baseline(run_dir: Path) -> dict[str, CellResult]:
    """The baseline run's finished cells by key and label; a baseline that does not verify is
    refused, since a forged baseline would hide a utility drop."""
    from privbench.governance.run_verification import require_verified

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
    """Store the gate results beside the run's results, for the report and for CI artifacts.

    Args:
        run_dir: the run folder; report: the results to store.
    Returns:
        The path written, `run_dir / "gates.json"`.
    """
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
