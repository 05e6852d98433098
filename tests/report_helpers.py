"""Helpers shared by the report, gate and browser tests: copies of the quick run, policies."""

from __future__ import annotations

import shutil
from pathlib import Path

PASS_POLICY = """
name = "passing"
allow_no_dp_baseline = true
[privacy]
max_epsilon = 8.0
delta_at_most_one_over_n = true
[attacks]
"max_tpr_at_fpr_1e-3" = 0.5
[utility]
metric = "utility.accuracy"
min = 0.05
"""

FAIL_POLICY = """
name = "failing"
allow_no_dp_baseline = true
[privacy]
max_epsilon = 4.0
[utility]
min = 0.05
"""


def copy_run(src: Path, dest: Path) -> Path:
    """A private copy of a finished run folder, so a test may re-gate or edit it."""
    shutil.copytree(src, dest)
    return dest


def write_policy(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
