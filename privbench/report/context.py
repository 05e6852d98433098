"""Context for the report's sections: the verdict, per-cell summaries and the plots (inline SVG).

Sections for audits, membership attacks, inversion and language models read the metric rows by
the shared naming conventions and appear only when such rows exist.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from privbench.attacks.membership.metrics import fpr_metric_name
from privbench.privacy.budget_monitor import ROUNDS_FILE, read_rounds
from privbench.run.cell_paths import cell_dir
from privbench.run.observations import SURFACES
from privbench.run.results import CellResult, MetricRow, read_json
from privbench.scoring import is_membership as scorer_is_membership

INVERSION_PREFIX = "inversion_"
INVERSION_METRICS = ("psnr", "ssim", "label_accuracy", "token_precision", "token_recall",
                     "exact_match", "rouge1", "rouge2")
# Per-round keys that are bookkeeping, not figures to draw.
NOT_PLOTTED = ("round", "alarm", "traceback")


def svg(fig: Any) -> str:
    """A matplotlib figure as inline SVG (no XML prolog), closing the figure."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def is_membership(row: MetricRow) -> bool:
    """A membership attack's row: the scorer registry (privbench/scoring.py) says which."""
    return scorer_is_membership(row.scorer)


def membership_attacks(cell: CellResult) -> list[str]:
    return sorted({m.scorer for m in cell.metrics if is_membership(m) and m.metric == "auc"})


def strongest(cell: CellResult, metric: str) -> MetricRow | None:
    """The membership row with the highest value of `metric` over every attack and surface."""
    rows = [m for m in cell.metrics if is_membership(m) and m.metric == metric]
    return max(rows, key=lambda m: m.value) if rows else None


def utility_row(cell: CellResult) -> MetricRow | None:
    """A cell's headline utility: test accuracy, else next-token accuracy (language models)."""
    return cell.metric("utility", "accuracy") or cell.metric("utility", "next_token_accuracy")


def scorecard_extras(cell: CellResult) -> dict[str, Any]:
    """eps_LB and tightness, strongest attack, inversion and canary figures for one cell."""
    out: dict[str, Any] = {}
    lb = cell.metric("audit", "eps_lb")
    out["eps_lb"] = lb
    eps = (cell.claim or {}).get("epsilon")
    out["tightness"] = (lb.value / eps if lb is not None and eps and math.isfinite(eps)
                        else None)
    out["best_auc"] = strongest(cell, "auc")
    out["best_tpr_1e3"] = strongest(cell, fpr_metric_name(1e-3))
    inv = [m for m in cell.metrics if m.scorer.startswith(INVERSION_PREFIX)
           and m.metric in ("psnr", "rouge1", "token_recall")]
    out["inversion"] = max(inv, key=lambda m: (m.metric, m.value)) if inv else None
    out["canary"] = cell.metric("canary_exposure", "max_exposure")
    out["perplexity"] = cell.metric("utility", "perplexity")
    return out


def verdict_context(gates: Any) -> dict[str, Any]:
    """The banner: PASS, WARN or FAIL against the policy, or "no policy"."""
    if gates is None:
        return {"verdict": "NO POLICY", "css": "none", "policy": None, "failures": [],
                "summary": "No policy was given: nothing was gated. Run `privbench gate "
                           "--policy POLICY.toml RUN` or `privbench suite ... --policy ...`."}
    counts: dict[str, int] = {}
    for r in gates.results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return {"verdict": gates.verdict, "css": gates.verdict.lower(), "policy": gates.policy,
            "failures": [r for r in gates.results if r.status in ("fail", "warn", "no data")],
            "summary": f"{len(gates.results)} gate checks: {summary}."}


# ---------------------------------------------------------------------------------------------
# Sections


def audit_context(cells: list[CellResult]) -> dict[str, Any] | None:
    """Claimed vs empirical epsilon: rows and a plot, when any cell has an audit eps_lb row."""
    rows = []
    for c in cells:
        lb = c.metric("audit", "eps_lb")
        if lb is None or not c.claim:
            continue
        ceiling = c.metric("audit", "eps_ceiling")
        rows.append({"cell": c, "claimed": c.claim["epsilon"], "lb": lb,
                     "ceiling": ceiling.value if ceiling else None,
                     "verdict": lb.details.get("verdict", "—"),
                     "alpha": lb.details.get("alpha"), "n": lb.details.get("n"),
                     "mode": lb.details.get("mode", "—"), "method": lb.details.get("method"),
                     "tightness": lb.details.get("tightness"), "surface": lb.surface,
                     "canary": lb.details.get("canary"), "note": lb.details.get("note", ""),
                     "eps_caught": lb.details.get("eps_caught"),
                     "power_x2": lb.details.get("power_at_claim_x2")})
    if not rows:
        return None
    forensics = [{"cell": c, "test": m.metric, "p_value": m.value, **m.details}
                 for c in cells for m in c.metrics if m.scorer == "audit_forensics"]
    return {"rows": rows, "svg": _audit_svg(rows), "forensics": forensics}


def _audit_svg(rows: list[dict[str, Any]]) -> str:
    finite = [r["claimed"] for r in rows if math.isfinite(r["claimed"])]
    inf_x = max(finite) * 2 if finite else 10.0
    fig, ax = plt.subplots(figsize=(10, 3.8), constrained_layout=True)
    xs = [r["claimed"] if math.isfinite(r["claimed"]) else inf_x for r in rows]
    ys = [r["lb"].value for r in rows]
    lo = [max(0.0, r["lb"].value - (r["lb"].ci_low if r["lb"].ci_low is not None
                                    else r["lb"].value)) for r in rows]
    hi = [max(0.0, (r["lb"].ci_high if r["lb"].ci_high is not None else r["lb"].value)
              - r["lb"].value) for r in rows]
    ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label="empirical ε lower bound")
    ceil = [(x, r["ceiling"]) for x, r in zip(xs, rows, strict=True) if r["ceiling"] is not None]
    if ceil:
        ax.scatter(*zip(*ceil, strict=True), marker="_", s=200, color="grey",
                   label="audit ceiling")
    top = max([*xs, *ys, 1e-3]) * 1.1
    ax.plot([0, top], [0, top], color="#b42318", linestyle="--", linewidth=1,
            label="lower bound = claim (above: claim refuted)")
    ax.set_xlabel("claimed ε (PLD)")
    ax.set_ylabel("empirical ε lower bound")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return svg(fig)


def rounds_context(run_dir: Path, cells: list[CellResult]) -> dict[str, Any] | None:
    """Budget spent over rounds against the plan, the other per-round figures, and alarms."""
    per_cell = []
    for c in cells:
        rows = [r for r in c.history if "round" in r]
        if not rows:
            rows = read_rounds(cell_dir(run_dir, c.key) / ROUNDS_FILE)
        if rows:
            per_cell.append((c, rows))
    if not per_cell:
        return None
    alarms = [{"cell": c.label, "round": r["round"], "reason": r["alarm"]}
              for c, rows in per_cell for r in rows if r.get("alarm")]
    return {"svg": _rounds_svg(per_cell), "alarms": alarms,
            "figures": sorted({k for _, rows in per_cell for r in rows for k, v in r.items()
                               if k not in NOT_PLOTTED and _is_number(v)})}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rounds_svg(per_cell: list[tuple[CellResult, list[dict[str, Any]]]]) -> str:
    keys = sorted({k for _, rows in per_cell for r in rows for k, v in r.items()
                   if k not in NOT_PLOTTED and k not in ("epsilon_planned", "epsilon_spent")
                   and _is_number(v)})
    budget = any("epsilon_spent" in r for _, rows in per_cell for r in rows)
    panels = (["budget"] if budget else []) + keys
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows),
                             constrained_layout=True, squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for i, (c, rows) in enumerate(per_cell):
            color = f"C{i % 10}"
            if panel == "budget":
                pts = [(r["round"], r["epsilon_spent"], r.get("epsilon_planned")) for r in rows
                       if "epsilon_spent" in r and math.isfinite(r["epsilon_spent"])]
                if not pts:
                    continue
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, label=c.label)
                ax.plot([p[0] for p in pts], [p[2] for p in pts], color=color, linestyle=":",
                        linewidth=1)
                alarm = [(r["round"], r["epsilon_spent"]) for r in rows if r.get("alarm")]
                if alarm:
                    ax.scatter(*zip(*alarm, strict=True), color="#b42318", marker="x", zorder=3)
            else:
                pts = [(r["round"], r[panel]) for r in rows if _is_number(r.get(panel))]
                if pts:
                    ax.plot(*zip(*pts, strict=True), color=color, label=c.label)
        ax.set_title("ε spent (solid) vs plan (dotted)" if panel == "budget"
                     else panel.replace("_", " "), fontsize=10)
        ax.set_xlabel("round")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return svg(fig)


def surfaces_context(run_dir: Path, cells: list[CellResult]) -> dict[str, Any] | None:
    """Which threat surfaces each configuration exposed, from cells/<key>/observations.json."""
    rows = []
    for c in cells:
        path = cell_dir(run_dir, c.key) / "observations.json"
        if not path.exists():
            continue
        exposed = read_json(path).get("exposed", {})
        rows.append({"cell": c, "exposed": [exposed.get(s) for s in SURFACES]})
    if not rows:
        return None
    return {"surfaces": SURFACES, "rows": rows}
