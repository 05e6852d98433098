"""Paired timing of an audited run against its unaudited baseline.

pytest-benchmark times each variant's rounds back to back, so a slow spell of a shared machine
that falls on one variant's rounds moves the ratio of the two groups (on 2 shared cores the
same row has read x1.01 one day and x1.21 another). A paired benchmark runs the two side by
side instead: each round times the baseline and the audited run once each, in alternating
order, so both meet the same spell, and the figure is the median of the rounds' ratios (with
the ratio of the two minimums beside it). pytest-benchmark's own statistics are those of a
whole pair.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any


def time_pairs(benchmark: Any, baseline: Callable[[], Any], audited: Callable[[], Any],
               setup: Callable[[], Any], rounds: int) -> dict[str, Any]:
    """Time `rounds` pairs (baseline, audited), each call after its own `setup()`, the order
    within a pair alternating; store and return the paired figures.

    Args:
        benchmark: the pytest-benchmark fixture (times each pair; the figures go to its
            `extra_info`, which the terminal summary of benchmarks/conftest.py prints).
        baseline, audited: the two runs; setup: called before each (a fresh cell's view of
            the accounting cache, say), untimed.
        rounds: the pairs timed (after one untimed warm-up pair).
    Returns:
        {"paired_ratio": the median of the pairs' audited / baseline times, "ratio_of_mins",
        "ratio_low"/"ratio_high": the smallest and largest pair's ratio, "baseline_ms" and
        "audited_ms": each side's times}.
    """
    times: dict[str, list[float]] = {"baseline": [], "audited": []}
    turns = itertools.count()

    def pair(record: bool = True) -> None:
        order = [("baseline", baseline), ("audited", audited)]
        for name, fn in order[::-1] if next(turns) % 2 else order:
            setup()
            start = time.perf_counter()
            fn()
            if record:
                times[name].append(time.perf_counter() - start)

    pair(record=False)  # warm-up: imports, first-call caches, allocator
    benchmark.pedantic(pair, rounds=rounds, iterations=1)
    ratios = [a / b for a, b in zip(times["audited"], times["baseline"], strict=True)]
    figures = {"paired_ratio": statistics.median(ratios),
               "ratio_of_mins": min(times["audited"]) / min(times["baseline"]),
               "ratio_low": min(ratios), "ratio_high": max(ratios),
               "baseline_ms": [t * 1e3 for t in times["baseline"]],
               "audited_ms": [t * 1e3 for t in times["audited"]]}
    benchmark.extra_info.update(figures)
    return figures
