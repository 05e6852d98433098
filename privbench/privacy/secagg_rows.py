"""Secure-aggregation rows for the results and the report: bytes uploaded per client per round,
the communication expansion, aborted rounds, realised noise, and the utility change that
compression costs at each epsilon."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from privbench.run.results import CellResult, MetricRow
from privbench.scoring import CellContext


def secagg_scorer(ctx: CellContext) -> list[MetricRow]:
    """Per-cell figures from the trainer's round records; [] when [secagg] is off."""
    spec = ctx.cell.spec.secagg
    if not spec.enabled:
        return []
    history = ctx.trained.history
    done = [h for h in history if "secagg_contributors" in h]
    details = {"compression": spec.compression, "neighbours": spec.neighbours,
               "groups": spec.groups, "distributed_dp": spec.distributed_dp, "bits": spec.bits,
               "modulus_bits": spec.modulus_bits, "rounds": len(history)}

    def row(metric: str, value: float) -> MetricRow:
        return MetricRow(ctx.key, "secagg", metric, float(value), surface="aggregates",
                         details=details)

    rows = [row("aborted_rounds", sum("secagg_aborted" in h for h in history))]
    if done:
        upload = float(np.mean([h["secagg_upload_bytes"] for h in done]))
        rows += [row("upload_bytes", upload),
                 row("contributors", float(np.mean([h["secagg_contributors"] for h in done])))]
        plain = [h["secagg_plain_bytes"] for h in done if "secagg_plain_bytes" in h]
        if plain:
            rows += [row("plain_bytes", float(np.mean(plain))),
                     row("expansion", upload / float(np.mean(plain)))]
    zs = [h["secagg_noise_multiplier"] for h in done if "secagg_noise_multiplier" in h]
    if zs:
        rows.append(row("realised_noise_multiplier", min(zs)))
    return rows


def report_rows(cells: list[CellResult]) -> list[dict[str, Any]]:
    """One row per secure-aggregation cell, with the accuracy change against the uncompressed
    cell of the same epsilon (with secure aggregation if the sweep has one, else without)."""
    ok = [c for c in cells if c.status == "ok"]
    rows = []
    for c in ok:
        sa = c.spec.get("secagg", {})
        if not sa.get("enabled"):
            continue
        eps = c.spec["privacy"]["epsilon"]
        acc = _value(c, "utility", "accuracy")
        ref = _reference(ok, c, eps)
        ref_acc = _value(ref, "utility", "accuracy") if ref else None
        rows.append({
            "label": c.label, "epsilon": (c.claim or {}).get("epsilon"),
            "compression": sa.get("compression"), "neighbours": sa.get("neighbours"),
            "groups": sa.get("groups"), "distributed_dp": sa.get("distributed_dp"),
            "upload_bytes": _value(c, "secagg", "upload_bytes"),
            "plain_bytes": _value(c, "secagg", "plain_bytes"),
            "expansion": _value(c, "secagg", "expansion"),
            "aborted": _value(c, "secagg", "aborted_rounds"),
            "accuracy": acc,
            "accuracy_change": (acc - ref_acc if acc is not None and ref_acc is not None
                                and ref is not c else None),
            "reference": ref.label if ref is not None and ref is not c else None,
        })
    return rows


def _reference(cells: list[CellResult], cell: CellResult, eps: float) -> CellResult | None:
    same = [c for c in cells if _same_eps(c.spec["privacy"]["epsilon"], eps)]
    groups = cell.spec.get("secagg", {}).get("groups")
    uncompressed = [c for c in same if c is not cell and c.spec.get("secagg", {}).get("enabled")
                    and c.spec["secagg"].get("compression") == "none"]
    uncompressed.sort(key=lambda c: c.spec["secagg"].get("groups") != groups)
    if uncompressed:
        return uncompressed[0]
    return next((c for c in same if not c.spec.get("secagg", {}).get("enabled")), None)


def _same_eps(a: Any, b: Any) -> bool:
    a, b = float(a), float(b)
    return (math.isinf(a) and math.isinf(b)) or a == b


def _value(cell: CellResult | None, scorer: str, metric: str) -> float | None:
    if cell is None:
        return None
    row = cell.metric(scorer, metric)
    return None if row is None else row.value
