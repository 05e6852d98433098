"""Relative paths in a suite file mean "beside the suite file", from any working directory."""

from __future__ import annotations

import pytest

from privbench.errors import SpecError
from privbench.spec.suite import load_suite

SUITE = """
name = "relative"
task = "causal_lm"
[data]
name = "support_messages"
[model]
path = "{path}"
[lm.canaries]
digits = 2
[sweep]
"privacy.epsilon" = [2.0, inf]
"""


def test_relative_model_path_resolves_against_the_suite_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "models" / "mine").mkdir(parents=True)
    (project / "models" / "mine" / "config.json").write_text("{}")
    (project / "models" / "mine" / "tokenizer.json").write_text("{}")  # checked up front too
    (project / "suite.toml").write_text(SUITE.format(path="models/mine"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    suite = load_suite(str(project / "suite.toml"))
    assert {c.spec.model.path for c in suite.cells} == {str(project / "models" / "mine")}


def test_a_relative_path_given_on_the_command_line_stays_relative_to_the_working_directory(
        tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "suite.toml").write_text(SUITE.format(path="/nonexistent"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    (tmp_path / "mine" / "tokenizer.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    suite = load_suite(str(project / "suite.toml"), ["model.path=mine"])
    assert suite.cells[0].spec.model.path == "mine"
    with pytest.raises(SpecError, match=r"no config\.json"):  # nothing beside the suite file
        load_suite(str(project / "suite.toml"), [f"model.path={project / 'mine'}"])
