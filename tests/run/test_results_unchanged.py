"""The quick suite's results are those recorded before the layout moved the modules into
concept folders (same spec, same seed): every cell's key (its content hash), status, claim,
per-round history and metric rows, values and intervals, equal the recording.

Floats are compared to a relative 1e-6, or an absolute 1e-6 for figures near zero: training is
not bit-identical across CPUs (BLAS and vectorised kernels differ by instruction set; see
test_round_records), and float32 losses of about 1 differ there by an ulp (1.2e-7), which is a
relative 1e-4 of a loss score or threshold of -0.001 (seen on an AMD EPYC: 9 such figures, none
off by more than 2.4e-7). A moved module, a changed random stream or a changed formula moves
these figures by far more than that.
Volatile fields (wall time, peak memory, the time written, the version) are left out.

A change that means to move the quick suite's results records them again:
    python tests/run/test_results_unchanged.py RUN_DIR   (RUN_DIR from `privbench suite quick`)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

RECORDED = Path(__file__).resolve().parents[1] / "recorded" / "quick_results_recorded.json"
VOLATILE = {"seconds", "peak_rss_mb", "written", "privbench_version", "source"}
REL = 1e-6
ABS = 1e-6  # a few float32 ulps of a figure of about 1


def normalised(results: dict[str, Any]) -> Any:
    """`results` without the volatile fields."""
    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in VOLATILE}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(results)


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where `a` and `b` differ: structure exactly, numbers to a relative REL."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only in one" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{path}[{i}]")]
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        if math.isclose(a, b, rel_tol=REL, abs_tol=ABS) or (math.isnan(a) and math.isnan(b)):
            return []
        return [f"{path}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def test_the_quick_suite_gives_the_results_recorded_before_the_moves(quick_results):
    recorded = json.loads(RECORDED.read_text())
    diff = differences(normalised(quick_results), recorded)
    assert not diff, "\n".join(diff[:20])


if __name__ == "__main__":
    run = Path(sys.argv[1])
    doc = normalised(json.loads((run / "results.json").read_text()))
    RECORDED.write_text(json.dumps(doc, sort_keys=True, indent=None) + "\n")
    print(f"recorded {RECORDED} from {run}")
