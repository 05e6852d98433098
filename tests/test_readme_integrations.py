"""The README's Opacus and pytest examples run as printed and do what the README says."""

from __future__ import annotations

import pytest
from readme_examples import readme_example

pytest_plugins = ["pytester"]


def test_readme_opacus_example_passes_and_prints_its_line(capsys):
    namespace: dict = {}
    exec(compile(readme_example("opacus"), "README.md:opacus", "exec"), namespace)
    result = namespace["result"]
    out = capsys.readouterr().out
    print(out)
    assert result.verdict == "PASS"
    assert result.claim.epsilon == pytest.approx(1.31, abs=0.01)  # the README's figure
    assert result.accounting.agrees
    assert out.startswith("opacus audit: PASS eps_LB")


def test_readme_pytest_example_passes_in_a_project(pytester):
    pytester.makepyfile(test_ours=readme_example("pytest"))
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
