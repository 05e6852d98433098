"""A user's own table for the data tests: Gaussian classes in 5 features at six sites, written
as CSV or Parquet (shared by tests/data/ and tests/spec/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SITES = [f"site-{c}" for c in "abcdef"]


def write_table(path: Path, per_client: int = 30, seed: int = 0) -> Path:
    """Three Gaussian classes in 5 features, 30 records at each of 6 sites (seeded)."""
    rng = np.random.default_rng(seed)
    n = per_client * len(SITES)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 5)) + 2.0 * np.eye(3, 5)[y]
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)])
    frame.insert(0, "site", np.repeat(SITES, per_client))
    frame["outcome"] = np.array(["low", "mid", "high"])[y]
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path
