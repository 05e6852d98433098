"""Benchmark reporting: every group's times as ratios to its baseline, measured in the same run.

A benchmark whose name contains `[baseline` is its group's baseline. Timing assertions do not
belong in tests; ratios printed here (and stored in the JSON under `extra_info`) are the figures.
"""

from __future__ import annotations

from collections import defaultdict


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    benchmarks = getattr(session, "benchmarks", None) if session else None
    if not benchmarks:
        return
    groups: dict[str, list] = defaultdict(list)
    for bench in benchmarks:
        groups[bench.group or ""].append(bench)
    terminalreporter.section("ratios to the baseline of each group (mean time)")
    for group, items in sorted(groups.items()):
        base = next((b for b in items if "[baseline" in b.name), None)
        if base is None:
            continue
        for b in sorted(items, key=lambda b: b.stats.mean):
            ratio = b.stats.mean / base.stats.mean
            terminalreporter.write_line(
                f"{group:24s} {b.name:60s} {b.stats.mean * 1e3:9.2f} ms  x{ratio:.2f}")
    paired = [b for b in benchmarks if "paired_ratio" in b.extra_info]
    if paired:
        terminalreporter.section("paired audit overhead: audited / baseline, timed in "
                                 "alternating pairs (benchmarks/paired.py)")
    for b in sorted(paired, key=lambda b: b.group or ""):
        info = b.extra_info
        terminalreporter.write_line(
            f"{b.group or '':48s} median of pairs x{info['paired_ratio']:.3f} "
            f"(pairs x{info['ratio_low']:.3f} to x{info['ratio_high']:.3f}; ratio of mins "
            f"x{info['ratio_of_mins']:.3f}; baseline min {min(info['baseline_ms']):.0f} ms)")
    steady = {g: items for g, items in groups.items()
              if any("steady_round_ms" in b.extra_info for b in items)}
    if steady:
        terminalreporter.section("steady-state round time, ratio to the group's baseline")
    for group, items in sorted(steady.items()):
        base = next((b for b in items if "[baseline" in b.name), None)
        if base is None or "steady_round_ms" not in base.extra_info:
            continue
        ref = base.extra_info["steady_round_ms"]
        for b in sorted(items, key=lambda b: b.extra_info.get("steady_round_ms", 0.0)):
            ms = b.extra_info.get("steady_round_ms")
            if ms is not None:
                terminalreporter.write_line(
                    f"{group:24s} {b.name:60s} {ms:9.2f} ms  x{ms / ref:.3f}")
