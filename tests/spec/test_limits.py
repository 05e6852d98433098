"""Limits up front: a plan that cannot fit in memory is refused before any cell starts."""

from __future__ import annotations

import pytest
from conftest import run_cli

from privbench.errors import PrivbenchError
from privbench.spec.limits import check_memory, memory_parts, parameter_counts
from privbench.spec.suite import load_suite


def test_absurd_rounds_are_refused_in_one_line_before_anything_runs(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("suite", "quick", "--set", "train.rounds=100000000", "--out", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("train.rounds:") and "964.0 GB" in lines[0], lines[0]
    assert "lower train.rounds" in lines[0]
    assert not out.exists() or not any(out.iterdir())  # nothing written, nothing trained


def test_the_estimate_counts_the_real_model_and_names_the_largest_term():
    cell = load_suite("quick").cells[0]
    total, trainable = parameter_counts(cell.spec)
    assert total == trainable == 64 * 32 + 32 + 32 * 10 + 10  # the quick suite's MLP [32]
    parts = {p.field: p.bytes for p in memory_parts(cell.spec)}
    assert parts["train.rounds"] == cell.spec.train.rounds * trainable * 4
    check_memory([cell], workers=2, available=4e9)  # fits: no error
    with pytest.raises(PrivbenchError, match=r"^train\.cohort: .* lower train\.cohort$"):
        check_memory([load_suite("quick", ["train.cohort=500", "data.clients=800"]).cells[0]],
                     workers=1, available=1.5e7)


def test_lora_counts_only_the_adapters_as_trainable():
    cell = load_suite("llm", ["lm.finetune=lora"]).cells[0]
    total, trainable = parameter_counts(cell.spec)
    assert 0 < trainable < total / 10
    full = load_suite("llm", ["lm.finetune=full"]).cells[0]
    assert parameter_counts(full.spec) == (total, total)
