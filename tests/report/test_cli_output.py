"""What `privbench suite` prints off a terminal (a pipe, a CI log): the whole table, never cut."""

from __future__ import annotations


def test_the_summary_table_is_not_truncated_when_stdout_is_not_a_terminal(quick_run):
    out = quick_run[1].stdout
    table = [line for line in out.splitlines() if line.startswith(("┃", "│"))]
    assert table, out
    assert not any("…" in line for line in table), out
    header = table[0]
    for column in ("claimed ε", "accuracy", "MIA AUC", "TPR@1e-3", "status", "time"):
        assert column in header, header
    for label in ("epsilon=1", "epsilon=8", "epsilon=inf"):
        assert any(line.startswith(f"│ {label} ") for line in table), out
