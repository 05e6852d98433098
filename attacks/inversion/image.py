"""Image and tabular gradient inversion: analytic first-layer recovery, iDLG labels, DLG and
Inverting Gradients (Geiping et al. 2020), the last two optimised for many batches at once.

Every attack reads a *pseudo-gradient*: what the server observes of a client, turned into the
direction of the gradient (for a local-SGD update u, the pseudo-gradient is -u; scale is
irrelevant to these attacks). With one local step on one batch it is exactly the batch gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from privbench.models.adapter import Params


def first_layer_recovery(weight_grad: torch.Tensor, bias_grad: torch.Tensor, k: int = 1,
                         rel_tol: float = 1e-6, distinct: float = 1e-3) -> torch.Tensor:
    """Inputs recovered through a fully connected first layer with bias: x = dW_i / db_i.

    For one record every row i with db_i != 0 gives x exactly. For several records each row gives
    the mix of the records that activate neuron i; this returns the `k` distinct row quotients
    with the largest |db_i| (rows closer than `distinct` in RMS to a chosen one are skipped).
    weight_grad: (H, D), bias_grad: (H,). Returns (k, D); fewer live rows repeat the last one.

    Args:
        weight_grad, bias_grad: the first layer's gradients (H, D) and (H,); k: records wanted;
        rel_tol: rows with |db_i| below this fraction of the largest are dead;
        distinct: the RMS distance below which two quotients count as one.
    """
    strength = bias_grad.abs()
    live = torch.nonzero(strength > rel_tol * strength.max().clamp(min=1e-30)).flatten()
    if live.numel() == 0:
        return torch.zeros(k, weight_grad.shape[1], dtype=weight_grad.dtype)
    live = live[strength[live].argsort(descending=True)]
    chosen: list[torch.Tensor] = []
    for i in live.tolist():
        x = weight_grad[i] / bias_grad[i]
        if all(float((x - c).pow(2).mean().sqrt()) > distinct for c in chosen):
            chosen.append(x)
        if len(chosen) == k:
            break
    while len(chosen) < k:
        chosen.append(chosen[-1])
    return torch.stack(chosen)


def idlg_labels(last_bias_grad: torch.Tensor, k: int = 1) -> list[int]:
    """Labels from the last layer's bias gradient (softmax cross-entropy).

    k = 1 (iDLG, Zhao et al. 2020): the one negative entry, softmax(z) - onehot(y), is the label.
    k > 1: every class with a negative entry is present; the remaining labels are the classes
    with the most negative entries, each counted by its share of the negative mass (as LLG does).

    Args:
        last_bias_grad: the last layer's bias gradient (C,); k: the batch's records.
    Returns:
        k labels, sorted.
    """
    g = last_bias_grad.detach().double()
    if k == 1:
        return [int(g.argmin())]
    negative = torch.nonzero(g < 0).flatten()
    labels = negative[g[negative].argsort()].tolist()[:k]
    if len(labels) < k and negative.numel():
        per_record = float(-g[negative].sum()) / k
        counts = {c: max(1, round(float(-g[c]) / per_record)) for c in labels}
        while sum(counts.values()) > k:
            smallest = min(counts, key=lambda c: float(-g[c]))
            counts[smallest] -= 1
        extra = sorted(counts, key=lambda c: float(g[c]))
        labels = [c for c in extra for _ in range(counts[c])]
        i = 0
        while len(labels) < k:
            labels.append(extra[i % len(extra)])
            i += 1
    return sorted(labels)


def _flat(params: Params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


def cosine_distance(a: Params, b: Params) -> torch.Tensor:
    """1 - cosine similarity of two gradients, all parameters together (Geiping et al.).

    Args:
        a, b: the two gradients (same names and shapes).
    """
    fa, fb = _flat(a), _flat(b)
    return 1 - (fa * fb).sum() / (fa.norm() * fb.norm()).clamp(min=1e-12)


def l2_distance(a: Params, b: Params) -> torch.Tensor:
    """Squared Euclidean distance of two gradients (DLG, Zhu et al. 2019).

    Args:
        a, b: the two gradients (same names and shapes).
    """
    return (_flat(a) - _flat(b)).pow(2).sum()


def total_variation(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels over a batch of flat images.

    Args:
        x: flat images (..., H * W); shape: (H, W).
    """
    img = x.reshape(-1, *shape)
    return ((img[:, 1:, :] - img[:, :-1, :]).abs().mean()
            + (img[:, :, 1:] - img[:, :, :-1]).abs().mean())


def gradient_matching(model: nn.Module, params: Params, target: Params, n_records: int,
                      n_features: int, *, labels: torch.Tensor | None, distance: str,
                      tv_weight: float, image_shape: tuple[int, int] | None, iterations: int,
                      lr: float, signed: bool, seed: int, bounds: tuple[float, float] = (0, 1)
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimise dummy records whose gradient matches each target gradient; G batches at once.

    target: pseudo-gradients with a leading batch axis G. labels: (G, B) known labels, or None to
    learn soft labels jointly (DLG). distance: "cosine" (Inverting Gradients) or "l2" (DLG).
    Returns the reconstructions (G, B, D) and the labels used or learned (G, B).

    Args:
        model: the attacked architecture; params: the round's global parameters.
        target, labels, distance: as above; n_records, n_features: B and D.
        tv_weight, image_shape: the total-variation prior (off when no shape).
        iterations, lr, signed, seed, bounds: Adam's plan (signed: Adam on the gradient's sign),
            the start's seed and the box the records are clamped to.
    """
    n_batches = next(iter(target.values())).shape[0]
    n_classes = params[list(params)[-1]].shape[0]
    gen = torch.Generator().manual_seed(seed)
    lo, hi = bounds
    x = (lo + (hi - lo) * torch.rand(n_batches, n_records, n_features, generator=gen))
    y_logits = torch.randn(n_batches, n_records, n_classes, generator=gen)
    dist: Callable[[Params, Params], torch.Tensor] = (
        cosine_distance if distance == "cosine" else l2_distance)
    learn_labels = labels is None

    def model_loss(p: Params, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, p, (xb,))
        if learn_labels:
            return -(yb.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()
        return F.cross_entropy(logits, yb)

    def objective(xb: torch.Tensor, yb: torch.Tensor, tb: Params) -> torch.Tensor:
        g = grad(model_loss)(params, xb, yb)
        loss = dist(g, tb)
        if tv_weight and image_shape is not None:
            loss = loss + tv_weight * total_variation(xb, image_shape)
        return loss

    argnums = (0, 1) if learn_labels else 0
    step_grad = grad(lambda xs, ys: vmap(objective)(xs, ys, target).sum(), argnums=argnums)
    x.requires_grad_(True)
    y_logits.requires_grad_(True)
    opt = torch.optim.Adam([x, y_logits] if learn_labels else [x], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)], gamma=0.1)
    for _ in range(iterations):
        ys = y_logits.detach() if learn_labels else labels
        grads = step_grad(x.detach(), ys)
        gx, gy = grads if learn_labels else (grads, None)
        x.grad = gx.sign() if signed else gx
        if gy is not None:
            y_logits.grad = gy
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(lo, hi)
    used = y_logits.detach().argmax(-1) if learn_labels else labels
    return x.detach(), used


def inverting_gradients(model: nn.Module, params: Params, target: Params, labels: torch.Tensor,
                        image_shape: tuple[int, int], *, iterations: int = 600, lr: float = 0.1,
                        tv_weight: float = 1e-3, seed: int = 0) -> torch.Tensor:
    """Inverting Gradients: cosine distance + total variation, signed Adam, box [0, 1].

    Args:
        model: the attacked architecture; params: the round's global parameters.
        target: pseudo-gradients (G, ...); labels: known labels (G, B); image_shape: (H, W).
        iterations, lr, tv_weight, seed: as in `gradient_matching`.
    Returns:
        The reconstructions (G, B, H * W).
    """
    x, _ = gradient_matching(model, params, target, labels.shape[1],
                             image_shape[0] * image_shape[1], labels=labels, distance="cosine",
                             tv_weight=tv_weight, image_shape=image_shape, iterations=iterations,
                             lr=lr, signed=True, seed=seed)
    return x


def dlg(model: nn.Module, params: Params, target: Params, n_records: int, n_features: int, *,
        iterations: int = 600, lr: float = 0.1, seed: int = 0
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Deep Leakage from Gradients: L2 gradient distance, records and soft labels learned.

    Args:
        model: the attacked architecture; params: the round's global parameters.
        target: pseudo-gradients (G, ...); n_records, n_features: B and D.
        iterations, lr, seed: as in `gradient_matching`.
    Returns:
        (reconstructions (G, B, D), learned labels (G, B)).
    """
    return gradient_matching(model, params, target, n_records, n_features, labels=None,
                             distance="l2", tv_weight=0.0, image_shape=None,
                             iterations=iterations, lr=lr, signed=False, seed=seed)
