"""Results: metric rows (DESIGN's schema), cell results, and their SQLite and JSON stores."""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MetricRow:
    """One measured number with its uncertainty and the threat surface it was measured on."""

    experiment: str
    scorer: str
    metric: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    surface: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class CellResult:
    """Everything one cell produced; `status` is "ok" or "error" (then `error` says why)."""

    key: str
    label: str
    axes: dict[str, Any]
    status: str
    spec: dict[str, Any]
    seconds: float = 0.0
    error: str | None = None
    claim: dict[str, Any] | None = None
    metrics: list[MetricRow] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    data_fingerprint: str | None = None
    # peak resident memory of the process that ran the cell (privbench.run.resources); `seconds`
    # is its wall time. None for results stored before it was recorded.
    peak_rss_mb: float | None = None

    def metric(self, scorer: str, metric: str) -> MetricRow | None:
        """The first row of `scorer`'s `metric`, or None when the cell has none (a skipped scorer).

        Args:
            scorer, metric: the row's scorer and metric names.
        """
        for row in self.metrics:
            if row.scorer == scorer and row.metric == metric:
                return row
        return None

    @property
    def health(self) -> str:
        """The status a person reads: "error", "utility collapsed: <why>" when the model is
        useless (suites.utility's collapse check), else "ok"."""
        if self.status != "ok":
            return self.status
        collapsed = self.metric("utility", "collapsed")
        if collapsed is not None and collapsed.value > 0:
            return f"utility collapsed: {collapsed.details.get('reason', '')}".rstrip(": ")
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-safe data (non-finite numbers as strings), for results.json."""
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        """The CellResult `to_dict` wrote, its numbers and metric rows restored."""
        data = json_restore(data)
        data["metrics"] = [MetricRow(**m) for m in data.get("metrics", [])]
        return cls(**data)


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by the strings "inf", "-inf", "nan" so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_restore(value: Any) -> Any:
    """Inverse of json_safe."""
    if value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, dict):
        return {k: json_restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_restore(v) for v in value]
    return value


def write_json(path: Path, data: Any, **where: Any) -> None:
    """Write `data` as standard JSON; inside an encrypted run folder the file is sealed
    (privbench.run.sealed: `where` may name the run folder and final path for a file written aside).

    Args:
        path: the file; data: anything json_safe accepts; where: run_dir and name, as in
            privbench.run.sealed.
    """
    from privbench.run.sealed import write_text

    write_text(Path(path), json.dumps(json_safe(data), indent=2, sort_keys=False,
                                      allow_nan=False), **where)


def read_json(path: Path, **where: Any) -> Any:
    """The JSON a `write_json` wrote (opened with the run key when sealed), non-finite numbers
    restored.

    Args:
        path: the file; where: run_dir and name, as in privbench.run.sealed.
    """
    from privbench.run.sealed import read_json as read_sealed

    return json_restore(read_sealed(Path(path), **where))


SCHEMA = """
CREATE TABLE cells (
    experiment TEXT PRIMARY KEY, label TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
    seconds REAL, spec TEXT NOT NULL, claim TEXT, data_fingerprint TEXT, peak_rss_mb REAL
);
CREATE TABLE metrics (
    experiment TEXT NOT NULL REFERENCES cells(experiment), scorer TEXT NOT NULL,
    metric TEXT NOT NULL, value REAL, ci_low REAL, ci_high REAL, surface TEXT, details TEXT,
    PRIMARY KEY (experiment, scorer, metric)
);
"""


def write_sqlite(path: Path, cells: list[CellResult]) -> None:
    """Write (replace) the results database: one row per cell and one row per metric.

    The database is built in memory and written as one file through privbench.run.sealed, so in an
    encrypted run no plaintext copy ever reaches the disk.

    Args:
        path: the database file; cells: the run's results.
    """
    from privbench.run.sealed import write_bytes

    write_bytes(Path(path), _sqlite_bytes(cells))


def _sqlite_bytes(cells: list[CellResult]) -> bytes:
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(SCHEMA)
        con.executemany(
            "INSERT INTO cells VALUES (?,?,?,?,?,?,?,?,?)",
            [(c.key, c.label, c.status, c.error, c.seconds, json.dumps(json_safe(c.spec)),
              json.dumps(json_safe(c.claim)) if c.claim else None, c.data_fingerprint,
              c.peak_rss_mb)
             for c in cells],
        )
        con.executemany(
            "INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?)",
            [(m.experiment, m.scorer, m.metric, m.value, m.ci_low, m.ci_high, m.surface,
              json.dumps(json_safe(m.details))) for c in cells for m in c.metrics],
        )
        con.commit()
        return _serialize(con)
    finally:
        con.close()


def _serialize(con: sqlite3.Connection) -> bytes:
    """The database file's bytes (Python 3.11+: serialize; 3.10: a private temporary copy)."""
    if hasattr(con, "serialize"):
        return con.serialize()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "db.sqlite"
        out = sqlite3.connect(path)
        try:
            con.backup(out)
        finally:
            out.close()
        return path.read_bytes()
