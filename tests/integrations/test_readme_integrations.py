"""The README's Opacus, pytest and own-data examples run as printed and do what the README says."""

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


@pytest.mark.parametrize("name, accuracy, epsilon", [("table", 0.9, 3.46), ("images", 0.85, 8.0)])
def test_readme_own_data_examples_run_through_privbench_suite(tmp_path, monkeypatch, capsys,
                                                              name, accuracy, epsilon):
    import json

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(name), f"README.md:{name}", "exec"), namespace)
    assert namespace["code"] == 0, capsys.readouterr()
    (cell,) = json.loads(next((tmp_path / "runs").glob("*/results.json")).read_text())["cells"]
    assert cell["status"] == "ok", cell["error"]
    assert cell["claim"]["epsilon"] == pytest.approx(epsilon, abs=0.01)  # the README's figures
    measured = next(m["value"] for m in cell["metrics"]
                    if m["scorer"] == "utility" and m["metric"] == "accuracy")
    assert measured == pytest.approx(accuracy, abs=0.05)
