"""The pytest plugin: a team's test gates a cached suite run and records JUnit properties."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

from report_helpers import FAIL_POLICY, PASS_POLICY

from privbench.gates.pytest_plugin import run_cache_dir
from privbench.spec.suite import load_suite

pytest_plugins = ["pytester"]

TEAM_TESTS = '''
import pytest

@pytest.mark.privbench(suite="quick")
@pytest.mark.privbench_gate
def test_privacy_passes(privbench_run):
    privbench_run.assert_gates("pass.toml")

@pytest.mark.privbench("quick")
def test_privacy_fails(privbench_run):
    privbench_run.assert_gates("fail.toml")
'''


def test_plugin_gates_a_cached_run_and_records_junit_properties(pytester, quick_run):
    cache = pytester.path / ".privbench-cache"
    shutil.copytree(quick_run[0], run_cache_dir(load_suite("quick"), cache))
    (pytester.path / "pass.toml").write_text(PASS_POLICY)
    (pytester.path / "fail.toml").write_text(FAIL_POLICY)
    pytester.makepyfile(test_team=TEAM_TESTS)
    result = pytester.runpytest("--junitxml=junit.xml",
                                "--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*privbench verdict FAIL against fail.toml:*",
        # the claim meets its target within 1e-3 (7.99999...), printed to 4 significant digits
        "*max_epsilon ?epsilon=8?: FAIL measured 8, threshold ≤ 4*margin -4*",
    ])
    tree = ET.parse(pytester.path / "junit.xml")
    props = {}
    for case in tree.iter("testcase"):
        props[case.get("name")] = {p.get("name"): p.get("value") for p in case.iter("property")}
    passed, failed = props["test_privacy_passes"], props["test_privacy_fails"]
    assert passed["privbench_verdict"] == "PASS" and failed["privbench_verdict"] == "FAIL"
    gate = failed["privbench_gate[max_epsilon][epsilon=8]"]
    assert gate.startswith("fail; measured=7.999")
    assert 7.999 <= float(gate.split(";")[1].split("=")[1]) <= 8.0
    assert passed["privbench_gate[max_epsilon][epsilon=8]"].startswith("pass;")
    # nothing was retrained: every cell came from the cache
    assert passed["privbench_cells_loaded"] == failed["privbench_cells_loaded"] == "3/3"
