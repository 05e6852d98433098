"""A useless model is flagged: accuracy at chance, or a test loss that exploded."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from privbench.run.results import CellResult
from privbench.suites.utility import classification_utility


def _data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = np.eye(3)[y] + 0.1 * rng.standard_normal((n, 3))
    return x.astype(np.float32), y


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.copy_(weight)
        model.bias.copy_(bias)
    return model


def _cell(rows) -> CellResult:
    return CellResult(key="k", label="c", axes={}, status="ok", spec={}, metrics=rows)


def test_a_constant_predictor_is_at_chance_and_a_learned_one_is_not():
    x, y = _data()
    constant = _linear(torch.zeros(3, 3), torch.tensor([1.0, 0.0, 0.0]))
    learned = _linear(5 * torch.eye(3), torch.zeros(3))
    rows = {name: {m.metric: m for m in classification_utility("k", model, x, y)}
            for name, model in (("constant", constant), ("learned", learned))}
    assert rows["constant"]["collapsed"].value == 1.0
    assert "accuracy at chance" in rows["constant"]["collapsed"].details["reason"]
    assert rows["learned"]["collapsed"].value == 0.0
    assert rows["learned"]["accuracy"].value > 0.95
    assert _cell(list(rows["learned"].values())).health == "ok"
    assert _cell(list(rows["constant"].values())).health.startswith("utility collapsed")


def test_an_exploded_loss_is_flagged_even_when_accuracy_is_above_chance():
    x, y = _data()
    y = np.where(np.arange(len(y)) % 10 == 0, (y + 1) % 3, y)  # every tenth label is wrong
    # right on most records, but so confident that each mistake costs a huge loss
    wild = _linear(1e4 * torch.eye(3), torch.zeros(3))
    rows = {m.metric: m for m in classification_utility("k", wild, x, y)}
    assert rows["accuracy"].ci_low > rows["collapsed"].details["chance_accuracy"]
    assert rows["loss"].value > 10 * rows["collapsed"].details["constant_predictor_loss"]
    assert rows["collapsed"].value == 1.0
    assert rows["collapsed"].details["reason"].startswith("loss exploded")


def test_the_scorecard_shows_a_collapsed_cell_instead_of_ok(quick_run, tmp_path):
    from privbench.gates.evaluate import load_cells
    from privbench.report.render import write_report
    from privbench.run.results import MetricRow
    from privbench.spec.suite import load_suite

    cells = load_cells(quick_run[0])
    i = cells[0].metrics.index(cells[0].metric("utility", "collapsed"))
    cells[0].metrics[i] = MetricRow(cells[0].key, "utility", "collapsed", 1.0, details={
        "reason": "accuracy at chance (0.10)"})
    html = write_report(tmp_path, load_suite("quick"), cells).read_text()
    assert "utility collapsed: accuracy at chance (0.10)" in html
    assert html.count(">ok</td>") == len(cells) - 1


def test_the_frontier_plots_language_models_next_token_accuracy():
    from privbench.report.render import _frontier_svg
    from privbench.run.results import MetricRow

    def cell(eps: float, with_utility: bool) -> CellResult:
        rows = [MetricRow("k", "utility", "next_token_accuracy", 0.3 + 0.01 * eps, 0.25, 0.4)
                ] if with_utility else []
        return CellResult(key=f"k{eps}", label=f"epsilon={eps}", axes={"privacy.epsilon": eps},
                          status="ok", spec={}, claim={"epsilon": eps}, metrics=rows)

    empty = _frontier_svg([cell(e, False) for e in (1.0, 8.0)])
    plotted = _frontier_svg([cell(e, True) for e in (1.0, 8.0)])
    assert plotted.count("<path") > empty.count("<path")
