"""Population scale: round time and peak RSS at 1,000 / 10,000 / 100,000 clients with a fixed
cohort, and round time against the cohort at 100,000 clients (issue 19, item 3).

The federation is `synthetic_federation` (privbench/data/federation_gen.py): clients generated from
the seed, gathered a cohort at a time (`GeneratedClients`), so memory follows the cohort, not the
population. Each configuration trains as a cell does (`train_fedavg` with the round monitor and
work folder, client-level DP at epsilon 8, Poisson sampling, MLP 32-64-10, one local epoch, batch
16) in a fresh process, so its peak RSS (`ru_maxrss`) is its own; the round time is the median
time between rounds after the first 5.

The streamed rows write the same generated clients to a Parquet file (sorted by client, row groups
of 1,024 rows) and train on them read per cohort from it (`data.name = "stream"`,
privbench/data/streamed.py).

Run: .venv/bin/python -m pytest benchmarks/test_bench_population.py -q -s
  or .venv/bin/python benchmarks/test_bench_population.py   (prints the table)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROUNDS, WARM, EPSILON = 20, 5, 8.0
POPULATIONS = (1_000, 10_000, 100_000)
COHORT = 100
COHORTS = (10, 100, 1_000)  # at 100,000 clients


def one_run(clients: int, cohort: int, source: str = "generated") -> dict:
    """Train one federation in this process; its steady round time and peak RSS.

    Args:
        clients: the population; cohort: the expected cohort.
        source: "generated" (clients generated a cohort at a time) or "parquet" (the same
            clients written to a Parquet file, then streamed from it: privbench/data/streamed.py).
    """
    import resource
    import statistics
    import tempfile
    import time

    import numpy as np
    import torch

    from privbench.data.federation_gen import N_CLASSES, N_FEATURES, GeneratedClients
    from privbench.models import build_model
    from privbench.privacy.budget_monitor import BudgetMonitor
    from privbench.spec.schema import CellSpec
    from privbench.trainers import train_fedavg
    from privbench.trainers.fedavg import classifier_adapter

    torch.set_num_threads(1)
    start = time.perf_counter()
    spec = CellSpec.model_validate({
        "seed": 0, "data": {"name": "synthetic_federation", "clients": clients},
        "model": {"hidden": [64]},
        "train": {"rounds": ROUNDS, "cohort": cohort, "local_epochs": 1, "batch_size": 16,
                  "lr": 0.1},
        "privacy": {"epsilon": EPSILON, "delta": 1e-6, "clip": 1.0}})
    generated = GeneratedClients(clients, spec.seed)
    public = generated.held_out(50)
    model = build_model(spec.model, N_FEATURES, N_CLASSES, spec.seed)
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        population = generated if source == "generated" else _streamed(Path(tmp), clients,
                                                                        spec.seed)
        train_fedavg(classifier_adapter(model), population, public, spec.train, spec.privacy,
                     spec.seed, on_round=lambda done, total: stamps.append(time.perf_counter()),
                     work_dir=Path(tmp) / "work",
                     on_record=BudgetMonitor(Path(tmp) / "rounds.jsonl", spec))
    return {"clients": clients, "cohort": cohort, "source": source, "n_max": population.n_max,
            "round_ms": float(statistics.median(np.diff(stamps)[WARM:])) * 1e3,
            "end_to_end_s": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _streamed(folder: Path, clients: int, seed: int):
    """The generated clients written to a Parquet file (`write_generated`), streamed from it."""
    from privbench.data.stream_files import write_generated
    from privbench.data.streamed import open_stream

    os.environ["PRIVBENCH_CACHE"] = str(folder / "cache")
    write_generated(folder / "clients.parquet", clients, seed)
    return open_stream(folder / "clients.parquet", "auto", "label", "client", [])


def run_isolated(clients: int, cohort: int, source: str = "generated") -> dict:
    """`one_run` in a fresh Python process (its own peak RSS)."""
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "from test_bench_population import one_run; "
            f"print(json.dumps(one_run({clients}, {cohort}, {source!r})))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table() -> list[dict]:
    rows = [run_isolated(n, COHORT) for n in POPULATIONS]
    rows += [run_isolated(POPULATIONS[-1], c) for c in COHORTS if c != COHORT]
    return rows


def streamed_table() -> list[dict]:
    """The streamed source's rows: the same clients read from Parquet per cohort."""
    return [run_isolated(n, COHORT, "parquet") for n in POPULATIONS]


def format_table(rows: list[dict]) -> str:
    lines = ["source     clients   cohort   round ms   peak RSS MB   end to end s"]
    lines += [f"{r.get('source', 'generated'):<9}  {r['clients']:>7,}  {r['cohort']:>7,}  "
              f"{r['round_ms']:9.1f}  {r['peak_rss_mb']:12.0f}  {r['end_to_end_s']:13.1f}"
              for r in rows]
    return "\n".join(lines)


@pytest.mark.benchmark(group="population")
def test_population_scale_table(benchmark):
    rows = benchmark.pedantic(table, rounds=1, iterations=1)
    benchmark.extra_info["rows"] = rows
    print("\n" + format_table(rows))
    by_population = [r for r in rows if r["cohort"] == COHORT]
    # flat in the population: the 100,000-client round within 1.5x of the 1,000-client one
    assert by_population[-1]["round_ms"] < 1.5 * by_population[0]["round_ms"]


@pytest.mark.benchmark(group="population")
def test_streamed_population_table(benchmark):
    """Streamed from Parquet: round time and peak RSS at 1,000 / 10,000 / 100,000 clients (the
    end-to-end time includes writing the file and its one indexing pass)."""
    rows = benchmark.pedantic(streamed_table, rounds=1, iterations=1)
    benchmark.extra_info["rows"] = rows
    print("\n" + format_table(rows))
    # A cohort reads at most one row group a client: the round time grows while the cohort's
    # clients still share row groups (1,000 clients: ~20 groups) and is flat once they do not.
    assert rows[-1]["round_ms"] < 1.5 * rows[1]["round_ms"]
    # memory follows the cohort: from 1,000 to 100,000 clients the peak grows by far less than
    # what the in-memory path allocates at 100,000 (every client padded to the largest count)
    padded_mb = rows[-1]["clients"] * rows[-1]["n_max"] * 32 * 4 / 1e6
    assert rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"] < padded_mb / 4


if __name__ == "__main__":
    print(format_table(table() + streamed_table()))
