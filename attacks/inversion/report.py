"""The report's inversion section: success against claimed epsilon, a gallery of digits beside
their reconstructions, and recovered text beside the original with matching tokens marked."""

from __future__ import annotations

import base64
import io
import math
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from privbench.run.results import CellResult, MetricRow

# (scorer, metric, legend) drawn on the curve; PSNR gets its own panel.
RATE_METRICS = (("inversion_idlg", "label_accuracy", "iDLG label accuracy"),
                ("inversion_bow", "token_recall", "bag-of-words token recall"),
                ("inversion_dager", "rouge1", "DAGER ROUGE-1"),
                ("inversion_dager", "exact_match", "DAGER exact batches"))
PSNR_METRICS = (("inversion_analytic", "analytic first layer"),
                ("inversion_ig", "Inverting Gradients"), ("inversion_dlg", "DLG"),
                ("inversion_analytic_aggregate", "analytic, aggregate only"))


def inversion_context(cells: list[CellResult]) -> dict[str, Any] | None:
    """Everything the section template needs, or None when no cell ran an inversion attack."""
    ok = [c for c in cells if c.status == "ok" and c.claim
          and any(m.scorer.startswith("inversion_") for m in c.metrics)]
    if not ok:
        return None
    ok.sort(key=lambda c: -c.claim["epsilon"])
    return {"curve_svg": _curve_svg(ok), "rows": [_summary(c) for c in ok],
            "galleries": [g for c in ok for g in _galleries(c)],
            "texts": [t for c in ok for t in _texts(c)]}


def _summary(cell: CellResult) -> dict[str, Any]:
    rows = [m for m in cell.metrics if m.scorer.startswith("inversion_")]
    return {"label": cell.label, "epsilon": cell.claim["epsilon"], "metrics": rows}


def _curve_svg(cells: list[CellResult]) -> str:
    finite = [c.claim["epsilon"] for c in cells if math.isfinite(c.claim["epsilon"])]
    inf_x = max(finite) * 4 if finite else 1.0
    series: dict[str, list[tuple[float, MetricRow]]] = defaultdict(list)
    for c in cells:
        others = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in c.axes.items()
                           if k != "privacy.epsilon")
        x = c.claim["epsilon"] if math.isfinite(c.claim["epsilon"]) else inf_x
        for scorer, metric, name in (*((s, "psnr", n) for s, n in PSNR_METRICS),
                                     *RATE_METRICS):
            row = c.metric(scorer, metric)
            if row is not None:
                series[f"{name}|{others}"].append((x, row))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for key, points in sorted(series.items()):
        name, others = key.split("|")
        ax = axes[0] if any(name == n for _, n in PSNR_METRICS) else axes[1]
        points.sort(key=lambda p: p[0])
        xs = [p[0] for p in points]
        ys = [p[1].value for p in points]
        lo = [max(0.0, p[1].value - (p[1].ci_low if p[1].ci_low is not None else p[1].value))
              for p in points]
        hi = [max(0.0, (p[1].ci_high if p[1].ci_high is not None else p[1].value) - p[1].value)
              for p in points]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3,
                    label=f"{name} ({others})" if others else name)
    for ax, title in zip(axes, ("reconstruction PSNR (dB, after matching)",
                                "success rate"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("claimed epsilon (PLD)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if any(not math.isfinite(c.claim["epsilon"]) for c in cells):
            ax.axvline(inf_x, color="lightgrey", linewidth=0.8)
            ax.annotate("∞ (no DP)", (inf_x, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, -28), textcoords="offset points", ha="center", fontsize=8)
        if ax.lines:
            ax.legend(fontsize=7)
    axes[1].set_ylim(-0.05, 1.05)
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def _galleries(cell: CellResult) -> list[dict[str, Any]]:
    out = []
    for scorer, name in PSNR_METRICS:
        row = cell.metric(scorer, "psnr")
        pairs = row.details.get("gallery") if row else None
        if pairs:
            out.append({"cell": cell.label, "attack": name, "png": _pairs_png(pairs),
                        "psnr": row.value, "view": row.details.get("view")})
    return out


def _pairs_png(pairs: list[dict[str, Any]]) -> str:
    """Originals (top) over reconstructions (bottom) as a base64 PNG data URI."""
    n = len(pairs)
    fig, axes = plt.subplots(2, n, figsize=(0.9 * n, 2.0), squeeze=False)
    for j, p in enumerate(pairs):
        side = math.isqrt(len(p["original"]))
        for i, key in enumerate(("original", "reconstruction")):
            axes[i][j].imshow(np.asarray(p[key]).reshape(side, side), cmap="gray_r", vmin=0,
                              vmax=1)
            axes[i][j].set_xticks([])
            axes[i][j].set_yticks([])
        axes[0][j].set_title(str(p["label"]), fontsize=8)
    axes[0][0].set_ylabel("original", fontsize=7)
    axes[1][0].set_ylabel("recovered", fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _texts(cell: CellResult) -> list[dict[str, Any]]:
    row = cell.metric("inversion_dager", "exact_match")
    if row is None or not row.details.get("examples"):
        return []
    pairs = []
    for batch in row.details["examples"]:
        for p in batch:
            original, recovered = p["original"], p["recovered"]
            pairs.append({
                "original": original,
                "recovered": [(tok, i < len(original) and original[i] == tok)
                              for i, tok in enumerate(recovered)],
            })
    return [{"cell": cell.label, "pairs": pairs, "exact": row.value}]
