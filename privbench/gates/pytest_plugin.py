"""pytest plugin (entry point `pytest11`): gate a team's model in its own test suite.

    @pytest.mark.privbench(suite="suites/ours.toml", overrides=["train.rounds=20"])
    def test_privacy(privbench_run):
        privbench_run.assert_gates("policy.toml")

`privbench_run` runs the suite, or loads it when a run of the same cells (content hash) is cached
under the cache folder (`--privbench-cache`, default .privbench-cache), so a rerun trains nothing.
Each gate result is recorded as a JUnit XML property (`--junitxml`).

A team that trains with its own code audits it with `privbench_audit`
(privbench.integrations.pytest_audit):

    @pytest.mark.privbench_audit(integration="opacus", canaries=300, seed=0)
    def test_our_dp_sgd(privbench_audit):
        result = privbench_audit(train_fn, claim=2.0)  # fails the test if the audit refutes it
        assert result.eps_lb <= 2.0
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DEFAULT_CACHE = ".privbench-cache"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register --privbench-suite and --privbench-cache and their ini defaults (suite "quick")."""
    group = parser.getgroup("privbench")
    group.addoption("--privbench-suite", default=None,
                    help="suite for the privbench_run fixture (built-in name or TOML path)")
    group.addoption("--privbench-cache", default=None,
                    help=f"folder of cached suite runs (default {DEFAULT_CACHE})")
    parser.addini("privbench_suite", "default suite for the privbench_run fixture", default="quick")
    parser.addini("privbench_cache", "folder of cached suite runs", default=DEFAULT_CACHE)


def pytest_configure(config: pytest.Config) -> None:
    """Register the `privbench`, `privbench_gate` and `privbench_audit` markers."""
    config.addinivalue_line(
        "markers", "privbench(suite=None, overrides=(), seed=None): the suite the privbench_run "
                   "fixture runs or loads for this test")
    config.addinivalue_line(
        "markers", "privbench_gate: a test that gates a model against a privbench policy")
    config.addinivalue_line(
        "markers", "privbench_audit(integration='opacus', delta=1e-5, confidence=0.95, "
                   "**audit options): defaults of the privbench_audit fixture for this test")


def run_cache_dir(suite: Any, root: Path) -> Path:
    """The cached run folder of a suite: named by the content hashes of all its cells.

    Args:
        suite: the loaded suite; root: the cache folder.
    Returns:
        `root / "<suite name>-<16 hex digits>"`: the same cells give the same folder, so a rerun
        loads rather than trains.
    """
    from privbench.run.paths import safe_folder_name

    digest = hashlib.sha256("\n".join(c.key for c in suite.cells).encode()).hexdigest()[:16]
    return Path(root) / f"{safe_folder_name(suite.spec.name)}-{digest}"


@dataclass
class PrivbenchRun:
    """A finished (or loaded) suite run, with gate assertions that record JUnit properties."""

    result: Any
    record_property: Any

    @property
    def run_dir(self) -> Path:
        """The run folder the fixture ran or loaded."""
        return self.result.run_dir

    @property
    def cells(self) -> list[Any]:
        """The run's CellResults."""
        return self.result.cells

    def gate(self, policy_path: str | Path) -> Any:
        """Evaluate a policy on this run, write gates.json and the report, and record each gate
        as a JUnit XML property."""
        from privbench.gates.evaluate import evaluate, record_verdict
        from privbench.gates.policy import load_policy

        policy = load_policy(policy_path)
        report = evaluate(self.cells, policy)
        record_verdict(self.run_dir, self.result.suite, self.cells, report)
        self.record_property("privbench_verdict", report.verdict)
        self.record_property("privbench_report", str(self.run_dir / "index.html"))
        for r in report.results:
            self.record_property(
                f"privbench_gate[{r.gate}][{r.cell}]",
                f"{r.status}; measured={r.measured}; threshold={r.threshold}; margin={r.margin}")
        return report

    def assert_gates(self, policy_path: str | Path, *, allow_warn: bool = True) -> Any:
        """Fail the test when a gate fails (or warns, with allow_warn=False), naming each gate,
        its threshold, the measured value and the margin.

        Args:
            policy_path: the policy TOML; allow_warn: False to fail on WARN and "no data" too.
        Returns:
            The GateReport when no gate failed.
        """
        report = self.gate(policy_path)
        bad = report.failures if allow_warn else [
            r for r in report.results if r.status in ("fail", "warn", "no data")]
        if bad:
            lines = "\n".join(r.line() for r in bad)
            pytest.fail(f"privbench verdict {report.verdict} against {policy_path}:\n{lines}\n"
                        f"report: {self.run_dir / 'index.html'}", pytrace=False)
        return report


_SESSION_RUNS: dict[Path, Any] = {}


@pytest.fixture
def privbench_run(request: pytest.FixtureRequest, record_property: Any) -> PrivbenchRun:
    """Run (or load from the cache) the suite named by the `privbench` marker, the
    --privbench-suite option or the `privbench_suite` ini value.

    Args:
        request: the test's request (its `privbench` marker: suite, overrides, seed, workers);
        record_property: records the run folder and how many cells were loaded from the cache.
    Returns:
        A PrivbenchRun; the test fails in one line when the suite cannot run or a cell failed.
    """
    from privbench.run.runner import run_suite
    from privbench.spec.suite import load_suite

    config = request.config
    marker = request.node.get_closest_marker("privbench")
    kwargs = dict(marker.kwargs) if marker else {}
    if marker and marker.args:
        kwargs.setdefault("suite", marker.args[0])
    name = kwargs.get("suite") or config.getoption("privbench_suite") or config.getini(
        "privbench_suite")
    suite_path = Path(str(name))
    if not suite_path.is_absolute() and (config.rootpath / suite_path).exists():
        name = str(config.rootpath / suite_path)
    suite = load_suite(str(name), list(kwargs.get("overrides", ())), seed=kwargs.get("seed"))
    root = Path(config.getoption("privbench_cache") or config.getini("privbench_cache"))
    if not root.is_absolute():
        root = config.rootpath / root
    run_dir = run_cache_dir(suite, root)
    if run_dir not in _SESSION_RUNS:
        from privbench.errors import PrivbenchError

        try:  # a cached run that does not verify, or is locked, fails in one line
            result = run_suite(suite, run_dir, workers=kwargs.get("workers", 1))
        except PrivbenchError as e:
            pytest.fail(f"privbench suite {suite.spec.name}: {e}", pytrace=False)
        if result.failed:
            pytest.fail(f"privbench suite {suite.spec.name}: cells failed: "
                        + "; ".join(f"{c.label}: {c.error}" for c in result.failed),
                        pytrace=False)
        _SESSION_RUNS[run_dir] = result
    record_property("privbench_run", str(run_dir))
    record_property("privbench_cells_loaded", f"{len(_SESSION_RUNS[run_dir].loaded)}"
                    f"/{len(_SESSION_RUNS[run_dir].cells)}")
    return PrivbenchRun(result=_SESSION_RUNS[run_dir], record_property=record_property)


@pytest.fixture
def privbench_audit(request: pytest.FixtureRequest, record_property: Any) -> Any:
    """`privbench_audit(train_fn, claim=..., **options)`: audit the team's own training.

    Calls `train_fn(audit)` with an integration's audit object (options from the
    `privbench_audit` marker, overridden by the call's), scores it, gates eps_LB against the
    claim as `privbench gate` does and fails the test with the gate's line when the audit refutes
    the claim. Returns the AuditResult (verdict, eps_lb, claim, rows) otherwise; a TOO_SMALL
    audit (it could not test the claim) passes with a warning recorded.

    Args:
        request: the test's request (its `privbench_audit` marker's defaults);
        record_property: records the audit line and the gate.
    """
    from privbench.errors import PrivbenchError
    from privbench.integrations.pytest_audit import audit_train_fn, gate

    marker = request.node.get_closest_marker("privbench_audit")
    defaults = dict(marker.kwargs) if marker else {}

    def run(train_fn: Any, **kwargs: Any) -> Any:
        options = {**defaults, **kwargs}
        confidence = float(options.pop("confidence", 0.95))
        fail_on = options.pop("fail", True)
        try:
            result = audit_train_fn(train_fn, **options)
        except PrivbenchError as e:
            pytest.fail(f"privbench audit: {e}", pytrace=False)
        g = gate(result, request.node.name, confidence)
        record_property("privbench_audit", result.line())
        record_property(f"privbench_gate[{g.gate}][{g.cell}]",
                        f"{g.status}; measured={g.measured}; threshold={g.threshold}; "
                        f"margin={g.margin}")
        if fail_on and g.status == "fail":
            pytest.fail(f"privbench audit {result.verdict}: {g.line()}\n{result.line()}",
                        pytrace=False)
        return result

    return run
