"""Report rows for language-model cells: perplexity, the membership attacks beside the blind
text-only baseline, canary exposure, the audit's eps_LB (with its ceiling and verdict) and what
inversion of the client updates recovered, per claimed epsilon."""

from __future__ import annotations

import math
from typing import Any

from privbench.run.results import CellResult


def lm_report_rows(cells: list[CellResult]) -> list[dict[str, Any]]:
    """One row per LM cell, ordered by unit then claimed epsilon (no DP last)."""
    rows = []
    for c in cells:
        if c.status != "ok" or c.spec.get("task", "tabular") == "tabular" or not c.claim:
            continue
        exposure = c.metric("canary_exposure", "mean_exposure")
        audit = c.metric("audit", "eps_lb")
        rows.append({
            "label": c.label, "unit": c.claim.get("unit"), "epsilon": c.claim.get("epsilon"),
            "finetune": c.spec.get("lm", {}).get("finetune"),
            "model": c.spec.get("model", {}).get("path") or c.spec.get("model", {}).get("name"),
            "perplexity": c.metric("utility", "perplexity"),
            "next_token_accuracy": c.metric("utility", "next_token_accuracy"),
            "accuracy": c.metric("utility", "accuracy"),
            "loss_auc": c.metric("loss", "auc"),
            "min_k_auc": c.metric("min_k", "auc"),
            "zlib_auc": c.metric("zlib", "auc"),
            "ref_ratio_auc": c.metric("ref_ratio", "auc"),
            "blind_auc": c.metric("blind", "auc"),
            "lira_auc": c.metric("lira_online", "auc"),  # shadow LMs (lm_shadow_attack)
            "rmia_auc": c.metric("rmia", "auc"),
            "exposure": exposure,
            "max_exposure": c.metric("canary_exposure", "max_exposure"),
            "extracted": c.metric("canary_exposure", "extracted"),
            "reference_exposure": c.metric("canary_exposure", "reference_exposure"),
            "by_repetitions": exposure.details.get("by_repetitions", {}) if exposure else {},
            "space": exposure.details.get("space") if exposure else None,
            "eps_lb": audit,
            "eps_ceiling": audit.details.get("eps_ceiling") if audit else None,
            "verdict": audit.details.get("verdict") if audit else None,
            "audit_design": audit.details.get("design") if audit else None,
            **_inversion(c),
        })
    rows.sort(key=lambda r: (str(r["unit"]), _eps_key(r["epsilon"])))
    return rows


def _inversion(c: CellResult) -> dict[str, Any]:
    """What the update inversion recovered (attacks/inversion/lm_updates.py) and which of its
    attacks each cell's updates allowed, and why not."""
    signals = c.metric("inversion_signals", "bow_available")
    dager = c.metric("inversion_dager", "exact_match")
    return {
        "bow_recall": c.metric("inversion_bow", "token_recall"),
        "bow_precision": c.metric("inversion_bow", "token_precision"),
        "dager_exact": dager,
        "dager_rouge1": c.metric("inversion_dager", "rouge1"),
        "sum_bow_recall": c.metric("inversion_bow_aggregate", "token_recall"),
        "sum_dager_rouge1": c.metric("inversion_dager_aggregate", "rouge1"),
        "inversion_view": signals.details.get("view") if signals else None,
        "inversion_steps": dager.details.get("local_steps") if dager else None,
        "recoverable": signals.details.get("recoverable", []) if signals else [],
    }


def _eps_key(eps: Any) -> float:
    return math.inf if eps is None or eps == "inf" else float(eps)
