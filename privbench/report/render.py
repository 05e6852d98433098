"""The HTML report: one self-contained file (inline CSS, inline SVG plots, no network loads)."""

from __future__ import annotations

import io
import math
import platform
import subprocess
from collections import defaultdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from jinja2 import Environment, PackageLoader, select_autoescape

import privbench
from privbench.attacks.inversion.report import inversion_context
from privbench.attacks.membership.metrics import fpr_metric_name
from privbench.governance.hooks import report_card
from privbench.governance.personal_scorer import report_rows as personal_report_rows
from privbench.privacy.secagg_rows import report_rows as secagg_report_rows
from privbench.report.language import lm_report_rows
from privbench.report.lm_shadow_rows import lm_shadow_rows
from privbench.report.membership import membership_context
from privbench.run.results import CellResult
from privbench.spec.suite import Suite

PACKAGES = ("torch", "opacus", "dp-accounting", "numpy", "scikit-learn", "scipy", "pandas",
            "pydantic", "safetensors", "matplotlib", "jinja2", "transformers", "peft", "tokenizers")
INF_LABEL = "∞ (no DP)"


def write_report(run_dir: Path, suite: Suite, cells: list[CellResult],
                 gates: Any = None, show_private_text: bool = False) -> Path:
    """Render `index.html` into `run_dir` (sealed in an encrypted run) and return its path.

    Args:
        run_dir: the run folder.
        suite: the run's suite.
        cells: its cell results.
        gates: a GateReport or None.
        show_private_text: include raw private text (text recovered by inversion beside the
            training text it came from); off by default, so a report can be shared.
    """
    from privbench.run.sealed import write_text

    path = run_dir / "index.html"
    write_text(path, render_report(run_dir, suite, cells, gates, show_private_text))
    return path


def render_report(run_dir: Path, suite: Suite, cells: list[CellResult], gates: Any = None,
                  show_private_text: bool = False) -> str:
    """The report's HTML (see `write_report`)."""
    from privbench.report import context as rc

    env = Environment(loader=PackageLoader("privbench", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["num"] = _num
    html = env.get_template("report.html.j2").render(
        suite=suite, rows=[_scorecard_row(c) for c in cells], cells=cells,
        frontier_svg=_frontier_svg(cells), env=environment(),
        membership=membership_context(cells),
        version=privbench.__version__, failed=[c for c in cells if c.status != "ok"],
        privacy_cards=[(c.label, report_card(run_dir, c)) for c in cells if c.claim],
        secagg_rows=secagg_report_rows(cells),
        verdict=rc.verdict_context(gates), gates=gates, audit=rc.audit_context(cells),
        inversion=_private_text(inversion_context(cells), show_private_text),
        rounds=rc.rounds_context(run_dir, cells),
        surfaces=rc.surfaces_context(run_dir, cells),
        seeds=sorted({c.spec.get("seed") for c in cells if c.spec}),
        lm_rows=lm_report_rows(cells),
        lm_shadow_rows=lm_shadow_rows(cells),
        personal_rows=personal_report_rows(cells),  # [governance]
    )
    return html


def _private_text(inversion: dict[str, Any] | None, show: bool) -> dict[str, Any] | None:
    """The inversion section without its raw text (original training sequences and their
    recoveries) unless `show`; `hidden_texts` counts what was left out, for the note."""
    if inversion is None or show:
        return inversion
    hidden = sum(len(t["pairs"]) for t in inversion.get("texts", []))
    return {**inversion, "texts": [], "hidden_texts": hidden}


def _scorecard_row(cell: CellResult) -> dict[str, Any]:
    claim = cell.claim or {}
    row: dict[str, Any] = {"cell": cell, "label": cell.label, "status": cell.health,
                           "error": cell.error, "key": cell.key}
    row["epsilon"] = claim.get("epsilon")
    row["epsilon_rdp"] = claim.get("epsilon_rdp")
    row["delta"] = claim.get("delta")
    row["unit"] = claim.get("unit")
    row["noise_multiplier"] = claim.get("noise_multiplier")
    for scorer, metric, name in (("utility", "accuracy", "accuracy"), ("utility", "loss", "loss"),
                                 ("loss", "auc", "auc"),
                                 ("loss", fpr_metric_name(1e-3), "tpr_1e3")):
        row[name] = cell.metric(scorer, metric)
    from privbench.report.context import scorecard_extras

    row.update(scorecard_extras(cell))
    return row


def environment() -> dict[str, str]:
    """Package versions, Python, platform and git revision, for the report's provenance."""
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "privbench": privbench.__version__}
    for pkg in PACKAGES:
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            env[pkg] = "not installed"
    env["git revision"] = git_revision() or "unknown"
    return env


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _frontier_svg(cells: list[CellResult]) -> str | None:
    """Utility (accuracy, or next-token accuracy for language models) and the strongest
    membership attack's AUC against claimed epsilon, one line per other sweep setting."""
    ok = [c for c in cells if c.status == "ok" and c.claim]
    if not ok:
        return None
    finite = [c.claim["epsilon"] for c in ok if math.isfinite(c.claim["epsilon"])]
    inf_x = (max(finite) * 4 if finite else 1.0)
    series: dict[str, list[tuple[float, CellResult]]] = defaultdict(list)
    for c in ok:
        others = {k: v for k, v in c.axes.items() if k != "privacy.epsilon"}
        name = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in others.items()) or "cells"
        eps = c.claim["epsilon"]
        series[name].append((eps if math.isfinite(eps) else inf_x, c))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    lm = any(c.metric("utility", "next_token_accuracy") for c in ok)
    panels = (("utility", "next-token accuracy (test)" if lm else "test accuracy"),
              ("auc", "membership AUC (strongest attack)"))
    for ax, (metric, title) in zip(axes, panels, strict=True):
        for name, points in sorted(series.items()):
            points.sort(key=lambda p: p[0])
            xs, ys, lo, hi = [], [], [], []
            for x, c in points:
                m = _frontier_value(c, metric)
                if m is None:
                    continue
                xs.append(x)
                ys.append(m.value)
                lo.append(m.value - (m.ci_low if m.ci_low is not None else m.value))
                hi.append((m.ci_high if m.ci_high is not None else m.value) - m.value)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("claimed epsilon (PLD)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if metric == "auc":
            ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        if any(not math.isfinite(c.claim["epsilon"]) for c in ok):
            ax.axvline(inf_x, color="lightgrey", linewidth=0.8)
            ax.annotate(INF_LABEL, (inf_x, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, -28), textcoords="offset points", ha="center", fontsize=8)
    if len(series) > 1:
        axes[0].legend(fontsize=8)
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog so it inlines in HTML


def _frontier_value(cell: CellResult, panel: str):
    """The row a frontier panel plots for `cell`: its utility (accuracy, else next-token
    accuracy) or its strongest membership attack's AUC."""
    from privbench.report.context import strongest, utility_row

    if panel == "auc":
        return strongest(cell, "auc")
    return utility_row(cell)


def _num(value: Any, digits: int = 3) -> str:
    """Format a number for the report: inf as ∞, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    if isinstance(value, float) and (abs(value) >= 1e4 or (0 < abs(value) < 1e-3)):
        return f"{value:.2e}"
    if isinstance(value, float):
        if abs(value) < 1:
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)
