"""[governance] The personal scorer: personalised vs global accuracy per client, and the
membership leakage of the personal layers (not covered by the global claim).

Accuracy on a client's own distribution: the clients differ in their label mix (a Dirichlet
partition), so a client's accuracy is the test accuracy of each class weighted by the share of
that class in the client's records, sum_y p_c(y) * acc(y), read for the client's personalised
model (global shared layers + its personal layers) and for the released global model.

Membership: a LOSS attack (score = -loss) on each client's personalised model, members its own
training records, non-members test records of the same labels (one per member, drawn with a
seeded generator), pooled over clients; the same pairs scored by the global model give the
comparison. AUCs carry their 95% interval (privbench.attacks.membership.roc).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.func import vmap

from privbench.attacks.membership.roc import auc_with_interval
from privbench.governance.personal import NOT_COVERED, PersonalLayers
from privbench.run.results import MetricRow
from privbench.scoring import CellContext
from privbench.stats import mean_interval

SCORER = "personal"


def personal_scorer(layers: PersonalLayers, task: Any) -> Callable[[CellContext], list[MetricRow]]:
    """The scorer of a cell trained with personal layers `layers` (task: its TaskRun).

    Args:
        layers: the trained personal layers (fine-tuned in place when the spec asks);
        task: the cell's TaskRun.
    Returns:
        A scorer giving accuracy_personalised, accuracy_global and accuracy_gain (means over
        clients, label-mix-weighted test accuracy) plus membership rows on the personal models.
    """

    def personal(ctx: CellContext) -> list[MetricRow]:
        spec = ctx.cell.spec
        adapter = task.adapter
        final = {n: p.detach() for n, p in ctx.trained.observations.final_params.items()}
        epochs = spec.personal.finetune_epochs or (1 if spec.personal.mode == "finetune" else 0)
        if epochs:
            layers.finetune(adapter, final, task.clients, epochs=epochs,
                            batch_size=spec.train.batch_size, lr=spec.train.lr, seed=spec.seed)
        clients = torch.arange(len(ctx.shards))
        mine = layers.models(final, clients)
        x_test = torch.from_numpy(ctx.data.x_test).float()
        y_test = np.asarray(ctx.data.y_test)
        with torch.no_grad():
            personal_pred = vmap(lambda p: adapter.outputs(p, {"x": x_test}))(mine).argmax(-1)
            global_pred = adapter.outputs(final, {"x": x_test}).argmax(-1)
        per_client = []
        for c, shard in enumerate(ctx.shards):
            mix = _label_mix(ctx.data.y_train[shard.indices], ctx.data.n_classes)
            per_client.append({
                "client": c, "records": len(shard.indices),
                "personalised": _weighted_accuracy(personal_pred[c].numpy(), y_test, mix),
                "global": _weighted_accuracy(global_pred.numpy(), y_test, mix),
                "rounds_trained": int(layers.rounds_kept[c])})
        pers = np.array([r["personalised"] for r in per_client])
        glob = np.array([r["global"] for r in per_client])
        details = {"per_client": per_client, "mode": layers.mode, "layers": layers.names,
                   "finetune_epochs": epochs,
                   "measure": "per-class test accuracy weighted by the client's label mix"}
        rows = [MetricRow(ctx.key, SCORER, "accuracy_personalised", *mean_interval(pers),
                          None, details),
                MetricRow(ctx.key, SCORER, "accuracy_global", *mean_interval(glob), None,
                          {"per_client": [{"client": r["client"], "global": r["global"]}
                                          for r in per_client]}),
                MetricRow(ctx.key, SCORER, "accuracy_gain", *mean_interval(pers - glob), None,
                          {"paired": "personalised minus global, per client"})]
        return rows + _membership_rows(ctx, adapter, mine, final)

    return personal


def _membership_rows(ctx: CellContext, adapter: Any, mine: dict[str, torch.Tensor],
                     final: dict[str, torch.Tensor]) -> list[MetricRow]:
    """LOSS-attack AUC of the personalised models and of the global model on the same pairs."""
    rng = np.random.default_rng(ctx.cell.spec.seed + 4_242)
    y_test = np.asarray(ctx.data.y_test)
    by_label = {y: np.flatnonzero(y_test == y) for y in np.unique(y_test)}
    scores: dict[str, list[np.ndarray]] = {k: [] for k in ("pm", "pn", "gm", "gn")}
    for c, shard in enumerate(ctx.shards):
        ys = ctx.data.y_train[shard.indices]
        pool = [y for y in ys if y in by_label]
        if not pool:
            continue
        members = shard.indices[[y in by_label for y in ys]]
        nonmembers = np.array([rng.choice(by_label[y]) for y in pool])
        own = {n: p[c] for n, p in mine.items()}
        for model, m_key, n_key in ((own, "pm", "pn"), (final, "gm", "gn")):
            scores[m_key].append(-_losses(adapter, model, ctx.data.x_train[members],
                                          ctx.data.y_train[members]))
            scores[n_key].append(-_losses(adapter, model, ctx.data.x_test[nonmembers],
                                          y_test[nonmembers]))
    joined = {k: np.concatenate(v) for k, v in scores.items()}
    n = {"members": len(joined["pm"]), "nonmembers": len(joined["pn"])}
    return [
        MetricRow(ctx.key, SCORER, "mia_auc_personalised",
                  *auc_with_interval(joined["pm"], joined["pn"]), None,
                  {**n, "attack": "LOSS on each client's personalised model",
                   "covered_by_claim": False, "note": NOT_COVERED}),
        MetricRow(ctx.key, SCORER, "mia_auc_global",
                  *auc_with_interval(joined["gm"], joined["gn"]), None,
                  {**n, "attack": "LOSS on the global model, the same record pairs",
                   "covered_by_claim": True}),
    ]


@torch.no_grad()
def _losses(adapter: Any, params: dict[str, torch.Tensor], x: np.ndarray,
            y: np.ndarray) -> np.ndarray:
    batch = {"x": torch.from_numpy(np.asarray(x)).float(),
             "y": torch.from_numpy(np.asarray(y)).long()}
    return adapter.per_example_loss(params, batch).double().numpy()


def _label_mix(labels: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(float)
    return counts / max(counts.sum(), 1.0)


def _weighted_accuracy(pred: np.ndarray, y: np.ndarray, mix: np.ndarray) -> float:
    """sum_y mix[y] * accuracy on the test records of class y (classes absent from the test
    set are dropped and the weights renormalised)."""
    total, weight = 0.0, 0.0
    for label, w in enumerate(mix):
        sel = y == label
        if w > 0 and sel.any():
            total += w * float((pred[sel] == label).mean())
            weight += w
    return float(total / weight) if weight else float("nan")


def report_rows(cells: list[Any]) -> list[dict[str, Any]]:
    """The report's personalisation rows: one per cell scored by the personal scorer."""
    out = []
    for c in cells:
        pers = c.metric(SCORER, "accuracy_personalised") if c.status == "ok" else None
        if pers is None:
            continue
        glob = c.metric(SCORER, "accuracy_global")
        mia, mia_global = (c.metric(SCORER, "mia_auc_personalised"),
                           c.metric(SCORER, "mia_auc_global"))
        out.append({"label": c.label, "mode": pers.details.get("mode"),
                    "layers": ", ".join(pers.details.get("layers", [])),
                    "finetune_epochs": pers.details.get("finetune_epochs"),
                    "personalised": pers, "global": glob, "mia": mia, "mia_global": mia_global,
                    "per_client": pers.details.get("per_client", [])})
    return out
