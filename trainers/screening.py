"""Server-side screening of client updates before clipping: a malformed or absurd update is
rejected (NaN or Inf, wrong shape or dtype, norm beyond a sanity bound), logged with the client
and round, and the round goes on without it."""

from __future__ import annotations

import logging
from typing import Any

import torch

from privbench.models.adapter import Params
from privbench.trainers.aggregation import update_norms

log = logging.getLogger("privbench.trainers")


def problem_with(update: Any, template: Params, max_norm: float) -> str | None:
    """Why one client's update must be rejected, or None when it is acceptable.

    Args:
        update: one client's unbatched update; template: the expected names, shapes and dtypes;
        max_norm: the sanity bound on its L2 norm.
    """
    if not isinstance(update, dict) or set(update) != set(template):
        return "wrong parameter names"
    for name, t in template.items():
        u = update[name]
        if not isinstance(u, torch.Tensor):
            return f"{name}: not a tensor"
        if u.shape != t.shape:
            return f"{name}: shape {tuple(u.shape)}, expected {tuple(t.shape)}"
        if u.dtype != t.dtype:
            return f"{name}: dtype {u.dtype}, expected {t.dtype}"
        if not bool(torch.isfinite(u).all()):
            return f"{name}: NaN or Inf"
    norm = float(update_norms({n: u.double().unsqueeze(0) for n, u in update.items()})[0])
    if norm > max_norm:
        return f"norm {norm:.3g} beyond the sanity bound {max_norm:g}"
    return None


def batch_problems(updates: Params, template: Params, max_norm: float) -> list[str | None]:
    """`problem_with` for every row of a batched update (K, ...) at once: names, shapes and dtypes
    are the batch's; finiteness and norms come from one pass per tensor in the model's dtype.

    A row holding NaN or Inf has a non-finite sum of squares, so the sums find every such row;
    a finite row whose sum overflows the dtype is told apart by an exact check of that row, and
    its norm is taken in float64, so every reason is what a float64 check gives.

    Args:
        updates: stacked (K, ...); template: unbatched; max_norm: the sanity bound.
    Returns:
        One reason (or None) per row.
    """
    k = next(iter(updates.values())).shape[0] if updates else 0
    if set(updates) != set(template):
        return ["wrong parameter names"] * k
    for name, t in template.items():
        u = updates[name]
        if u.shape[1:] != t.shape:
            return [f"{name}: shape {tuple(u.shape[1:])}, expected {tuple(t.shape)}"] * k
        if u.dtype != t.dtype:
            return [f"{name}: dtype {u.dtype}, expected {t.dtype}"] * k
    reasons: list[str | None] = [None] * k
    if k == 0:
        return reasons
    names = list(template)
    squares = torch.stack([torch.linalg.vector_norm(updates[n].reshape(k, -1), dim=1) ** 2
                           for n in names])  # (tensors, K)
    norms = squares.sum(dim=0).sqrt().double()
    suspect = ~torch.isfinite(squares)
    if bool(suspect.any()):  # rare: NaN or Inf, or a sum too large for the dtype
        for i, pos in torch.nonzero(suspect).tolist():
            if reasons[pos] is None and not bool(torch.isfinite(updates[names[i]][pos]).all()):
                reasons[pos] = f"{names[i]}: NaN or Inf"
        for pos in torch.nonzero(suspect.any(dim=0)).flatten().tolist():
            if reasons[pos] is None:
                norms[pos] = float(update_norms({n: updates[n][pos:pos + 1].double()
                                                 for n in names})[0])
    for pos in torch.nonzero(norms > max_norm).flatten().tolist():
        reasons[pos] = reasons[pos] or (f"norm {float(norms[pos]):.3g} beyond the sanity bound "
                                        f"{max_norm:g}")
    return reasons


def screen_updates(updates: Params, clients: list[int], template: Params, *, max_norm: float,
                   round_no: int, replaced: dict[int, Any] | None = None
                   ) -> tuple[Params | None, list[int], list[dict[str, Any]]]:
    """Keep the acceptable rows of a batched update (K, ...); `replaced` maps a row position to
    an update received instead of the honest one. Returns (kept batch or None, kept positions,
    rejections with client id, round and reason).

    Args:
        updates: stacked (K, ...); clients: each row's client id; template: unbatched;
        max_norm: train.max_update_norm; round_no: the round (1-based), for the log;
        replaced: row -> the update received instead (a test's tamper hook).
    """
    replaced = replaced or {}
    reasons = batch_problems(updates, template, max_norm) if clients else []
    for pos, row in replaced.items():
        reasons[pos] = problem_with(row, template, max_norm)
    kept, rejections = [], []
    for pos, (client, why) in enumerate(zip(clients, reasons, strict=True)):
        if why is None:
            kept.append(pos)
        else:
            rejections.append({"client": client, "round": round_no, "reason": why})
            log.warning("round %d: rejected the update of client %d: %s", round_no, client, why)
    if not kept:
        return None, kept, rejections
    if not any(pos in replaced for pos in kept):
        if len(kept) == len(clients):  # every row kept: the batch as it came, not a copy
            return {n: updates[n] for n in template}, kept, rejections
        rows = torch.tensor(kept)
        return {n: updates[n][rows] for n in template}, kept, rejections
    batch = {n: torch.stack([replaced[p][n] if p in replaced else updates[n][p] for p in kept])
             for n in template}
    return batch, kept, rejections
