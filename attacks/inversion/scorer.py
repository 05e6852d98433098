"""The inversion scorer: a curious server attacks the client updates a cell's trainer recorded,
and (optionally) one-step updates of a tiny GPT-2 under the cell's DP mechanism.

Rows follow the shared convention: scorer "inversion_<attack>", surface "client_updates", and
details that declare the threat model's assumptions (labels, batch size, local steps, view).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import nn

from privbench.attacks.inversion.client_noise import with_client_noise
from privbench.attacks.inversion.image import (
    dlg,
    first_layer_recovery,
    idlg_labels,
    inverting_gradients,
)
from privbench.attacks.inversion.language import (
    CORPUS,
    EOS,
    encode,
    lm_gradient,
    tiny_gpt2,
    vocabulary,
)
from privbench.attacks.inversion.metrics import (
    hungarian_match,
    image_scores,
    label_accuracy,
    psnr,
    ssim,
    summarise,
    text_example,
    text_scores,
    token_precision_recall,
)
from privbench.attacks.inversion.text import dager, embedding_rows
from privbench.models.adapter import Params
from privbench.rng import generator
from privbench.run.results import MetricRow
from privbench.scoring import CellContext
from privbench.spec.attack_schema import InversionAttackSpec
from privbench.trainers.aggregation import clip_updates

GALLERY = 8  # image pairs and text batches kept in the details for the report


def inversion_scorer(ctx: CellContext) -> list[MetricRow]:
    """Every enabled inversion attack on this cell, one row per attack and metric."""
    spec = ctx.cell.spec.attacks.inversion
    if not spec.enabled:
        return []
    claim = ctx.trained.claim
    noise_std = (claim.noise_multiplier * (claim.clip or 0.0)) if spec.noise == "client" else 0.0
    gen = generator(ctx.cell.spec.seed, 0x1A7)
    common = {"noise": spec.noise, "noise_std": noise_std, "claimed_epsilon": claim.epsilon,
              "view": _view(spec, claim.noise_multiplier)}
    rows: list[MetricRow] = []
    obs = ctx.trained.observations
    if obs.exposes("client_updates"):
        rows += _image_rows(ctx, spec, noise_std, gen, common)
        rows += _aggregate_rows(ctx, spec, noise_std, gen, common)
    elif obs.exposes("aggregates") and obs.aggregates:  # secure aggregation: the sum alone
        rows += _aggregate_rows(ctx, spec, noise_std, gen, common)
    if spec.text:
        rows += _text_rows(ctx, spec, noise_std, gen, common)
    return rows


def _view(spec: InversionAttackSpec, z: float) -> str:
    if z == 0:
        return "the client's raw update (no DP)"
    if spec.noise == "client":
        return "the clipped update plus N(0, (z C)^2) added before it leaves the client"
    return "the clipped update before the server adds central noise (central DP does not hide it)"


def _first_and_last_layers(model: nn.Module) -> tuple[str, str, str]:
    """Names of the first Linear's weight and bias and of the last Linear's bias."""
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear or model.get_submodule(linear[0]).bias is None:
        raise ValueError("the inversion attacks need a model whose first layer is Linear with bias")
    return f"{linear[0]}.weight", f"{linear[0]}.bias", f"{linear[-1]}.bias"


def _has_records(ctx: CellContext, client: int) -> bool:
    """A real client holding records. An audit's canary clients (ids past the real shards) send
    a planted vector, not a gradient of data: there is nothing of theirs to invert."""
    return client < len(ctx.shards) and len(ctx.shards[client].indices) > 0


def _image_rows(ctx: CellContext, spec: InversionAttackSpec, noise_std: float,
                gen: torch.Generator, common: dict[str, Any]) -> list[MetricRow]:
    obs, data, model = ctx.trained.observations, ctx.data, ctx.trained.model
    shape = data.image_shape  # None: not images
    w_name, b_name, last_bias = _first_and_last_layers(model)
    targets = [(r, c, u) for r in sorted(obs.client_updates)
               for c, u in sorted(obs.client_updates[r].items())
               if _has_records(ctx, c)][: spec.clients]
    if not targets:
        return []
    train = ctx.cell.spec.train
    per_attack: dict[str, list[dict[str, float]]] = defaultdict(list)
    gallery: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_size: dict[int, list[tuple[int, Params, np.ndarray, np.ndarray]]] = defaultdict(list)
    for r, c, update in targets:
        idx = ctx.shards[c].indices
        x, y = data.x_train[idx], data.y_train[idx]
        pseudo = {k: -v for k, v in with_client_noise(update, noise_std, gen).items()}
        k = len(idx)
        labels = idlg_labels(pseudo[last_bias], k)
        if "idlg" in spec.image_attacks:
            per_attack["idlg"].append({"label_accuracy": label_accuracy(labels, y.tolist())})
        if "analytic" in spec.image_attacks and shape is not None:
            rec = first_layer_recovery(pseudo[w_name], pseudo[b_name], k).numpy()
            per_attack["analytic"].append(image_scores(rec, x, shape))
            _add_gallery(gallery["analytic"], rec, x, y)
        by_size[k].append((r, pseudo, x, np.array(labels)))
    if shape is not None and ({"ig", "dlg"} & set(spec.image_attacks)):
        _optimisation_attacks(ctx, spec, by_size, shape, per_attack, gallery)
    steps = math.ceil(max(len(ctx.shards[c].indices) for _, c, _ in targets)
                      / train.batch_size) * train.local_epochs
    assumptions = {
        "analytic": {"labels": "not needed", "batch_size": "known (the client's record count)"},
        "idlg": {"labels": "unknown: recovered from the last-layer bias",
                 "batch_size": "known (the client's record count)"},
        "ig": {"labels": "unknown: the iDLG labels are used",
               "batch_size": "known (the client's record count)"},
        "dlg": {"labels": "unknown: learned jointly", "batch_size": "known"},
    }
    rows = []
    for attack, batches in per_attack.items():
        details = {**common, **assumptions[attack], "n": len(batches),
                   "rounds": sorted({r for r, _, _ in targets}),
                   "local_steps_max": steps, "local_epochs": train.local_epochs,
                   "unit": "attacked client"}
        rows += _rows(ctx.key, f"inversion_{attack}", batches, details,
                      {"gallery": gallery.get(attack, [])})
    return rows


def _aggregate_rows(ctx: CellContext, spec: InversionAttackSpec, noise_std: float,
                    gen: torch.Generator, common: dict[str, Any]) -> list[MetricRow]:
    """Secure aggregation: the server sees only each round's sum of the cohort's updates (each
    noised as its client sends it); the same first-layer and label attacks run on the sum,
    scored per record of the cohort."""
    obs, data, model = ctx.trained.observations, ctx.data, ctx.trained.model
    shape = data.image_shape  # None: not images
    w_name, b_name, last_bias = _first_and_last_layers(model)
    per_record: dict[str, list[dict[str, float]]] = defaultdict(list)
    per_client = bool(obs.client_updates)
    rounds = sorted(obs.client_updates if per_client else obs.aggregates)
    for r in rounds:
        if per_client:
            clients = [c for c in sorted(obs.client_updates[r]) if _has_records(ctx, c)]
            if not clients:
                continue
            views = [with_client_noise(obs.client_updates[r][c], noise_std, gen) for c in clients]
            pseudo = {n: -sum(v[n] for v in views) for n in views[0]}
        else:  # the server decoded only the secure sum of the round's cohort
            clients = [c for c in obs.cohorts.get(r, []) if _has_records(ctx, c)]
            if not clients:
                continue
            pseudo = {n: -t for n, t in obs.aggregates[r].items()}
        idx = np.concatenate([ctx.shards[c].indices for c in clients])
        x, y = data.x_train[idx], data.y_train[idx]
        labels = idlg_labels(pseudo[last_bias], len(idx))
        hits = label_accuracy(labels, y.tolist()) * len(idx)
        per_record["idlg"] += [{"label_accuracy": float(i < round(hits))}
                               for i in range(len(idx))]
        if shape is not None:
            rec = first_layer_recovery(pseudo[w_name], pseudo[b_name], len(idx)).numpy()
            match = hungarian_match(rec, x)
            rec = np.clip(rec[match], 0, 1).reshape(-1, *shape)
            ori = x.reshape(-1, *shape)
            per_record["analytic"] += [
                {"psnr": float(min(p, 100.0)), "ssim": float(q)}
                for p, q in zip(psnr(rec, ori), ssim(rec, ori), strict=True)]
    details = {**common, "n_rounds": len(rounds), "unit": "record of the cohort",
               "source": "the sum of the client updates" if per_client
               else "the secure-aggregation sum the server decoded",
               "batch_size": "known (the cohort's record count)",
               "labels": "unknown: counted from the aggregate's last-layer bias"}
    rows = []
    for attack, records in per_record.items():
        for r in _rows(ctx.key, f"inversion_{attack}", records, details, {}):
            rows.append(MetricRow(r.experiment, f"{r.scorer}_aggregate", r.metric, r.value,
                                  r.ci_low, r.ci_high, surface="aggregates",
                                  details={**r.details, "n": len(records)}))
    return rows


def _optimisation_attacks(ctx: CellContext, spec: InversionAttackSpec,
                          by_size: dict[int, list[tuple[int, Params, np.ndarray, np.ndarray]]],
                          shape: tuple[int, int], per_attack: dict[str, list[dict[str, float]]],
                          gallery: dict[str, list[dict[str, Any]]]) -> None:
    """Inverting Gradients and DLG, one vectorised optimisation per (round, batch size) group."""
    model = ctx.trained.model
    groups: dict[tuple[int, int], list] = defaultdict(list)
    for k, items in by_size.items():
        for item in items:
            groups[(item[0], k)].append(item)
    for (r, k), items in sorted(groups.items()):
        params = ctx.trained.observations.round_params[r]
        target = {n: torch.stack([it[1][n] for it in items]) for n in params}
        if "ig" in spec.image_attacks:
            labels = torch.as_tensor(np.stack([it[3] for it in items]))
            rec = inverting_gradients(model, params, target, labels, shape,
                                      iterations=spec.iterations, seed=ctx.cell.spec.seed)
            for g, it in enumerate(items):
                per_attack["ig"].append(image_scores(rec[g].numpy(), it[2], shape))
                _add_gallery(gallery["ig"], rec[g].numpy(), it[2], it[3])
        if "dlg" in spec.image_attacks:
            rec, _ = dlg(model, params, target, k, shape[0] * shape[1],
                         iterations=spec.iterations, seed=ctx.cell.spec.seed)
            for g, it in enumerate(items):
                per_attack["dlg"].append(image_scores(rec[g].numpy(), it[2], shape))
                _add_gallery(gallery["dlg"], rec[g].numpy(), it[2], it[3])


def _add_gallery(gallery: list[dict[str, Any]], rec: np.ndarray, x: np.ndarray,
                 y: np.ndarray) -> None:
    if len(gallery) >= GALLERY:
        return
    match = hungarian_match(rec, x)
    gallery.append({"original": np.round(x[0], 3).tolist(),
                    "reconstruction": np.round(np.clip(rec[match[0]], 0, 1), 3).tolist(),
                    "label": int(y[0])})


def _rows(key: str, scorer: str, batches: list[dict[str, float]], details: dict[str, Any],
          first_extra: dict[str, Any]) -> list[MetricRow]:
    rows = []
    for i, (metric, (m, lo, hi)) in enumerate(summarise(batches).items()):
        extra = first_extra if i == 0 else {}
        rows.append(MetricRow(key, scorer, metric, m, lo, hi, surface="client_updates",
                              details={**details, **extra}))
    return rows


def _text_rows(ctx: CellContext, spec: InversionAttackSpec, noise_std: float,
               gen: torch.Generator, common: dict[str, Any]) -> list[MetricRow]:
    """Bag of words and DAGER on one-step updates of a tiny GPT-2 (untied embeddings) at
    initialisation, each update clipped to C under DP, as the cell's mechanism would."""
    seed = ctx.cell.spec.seed
    vocab = vocabulary()
    eos = vocab.index(EOS)
    model = tiny_gpt2(len(vocab), seed)
    rng = random.Random(seed * 31 + 7)
    clip = ctx.trained.claim.clip
    bow, seqs, examples = [], [], []
    for i in range(spec.text_batches):
        b = 1 + i % spec.text_batch_size
        ids, labels = encode(rng.sample(CORPUS, b), vocab)
        g = lm_gradient(model, ids, labels)
        if clip:
            g = {n: t[0] for n, t in clip_updates({n: t[None] for n, t in g.items()}, clip)[0]
                 .items()}
        g = with_client_noise(g, noise_std, gen)
        true = [ids[j][labels[j] != -100].tolist() for j in range(b)]
        found = embedding_rows(g["transformer.wte.weight"], noise_std)
        p, r = token_precision_recall(found - {eos}, {t for s in true for t in s} - {eos})
        bow.append({"token_precision": p, "token_recall": r})
        rec = [[*s, eos] for s in dager(model, g, max_len=ids.shape[1], noise_std=noise_std)]
        seqs.append(text_scores(rec, true))
        if len(examples) < GALLERY // 2:
            examples.append(text_example(rec, true, vocab))
    details = {**common, "model": "tiny GPT-2 (2 blocks, width 128, untied embeddings) at "
               "initialisation, one local step", "batch_size": f"1 to {spec.text_batch_size}, "
               "not needed by the attack", "labels": "next tokens (language modelling)",
               "format": "every sequence ends with <eos> (known to the attacker)",
               "n": spec.text_batches, "unit": "attacked batch"}
    return (_rows(ctx.key, "inversion_bow", bow, {**details, "attack": "bag of words"}, {})
            + _rows(ctx.key, "inversion_dager", seqs, details, {"examples": examples}))
