"""Server-side screening of client updates before clipping: a malformed or absurd update is
rejected (NaN or Inf, wrong shape or dtype, norm beyond a sanity bound), logged with the client
and round, and the round goes on without it."""

from __future__ import annotations

import logging
from typing import Any

import torch

from privbench.trainers.aggregation import update_norms

Params = dict[str, torch.Tensor]
log = logging.getLogger("privbench.trainers")


def problem_with(update: Any, template: Params, max_norm: float) -> str | None:
    """Why one client's update must be rejected, or None when it is acceptable."""
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


def screen_updates(updates: Params, clients: list[int], template: Params, *, max_norm: float,
                   round_no: int, replaced: dict[int, Any] | None = None
                   ) -> tuple[Params | None, list[int], list[dict[str, Any]]]:
    """Keep the acceptable rows of a batched update (K, ...); `replaced` maps a row position to
    an update received instead of the honest one. Returns (kept batch or None, kept positions,
    rejections with client id, round and reason)."""
    replaced = replaced or {}
    keep_rows, kept, rejections = [], [], []
    for pos, client in enumerate(clients):
        row = replaced.get(pos, {n: u[pos] for n, u in updates.items()})
        why = problem_with(row, template, max_norm)
        if why is None:
            keep_rows.append(row)
            kept.append(pos)
        else:
            rejections.append({"client": client, "round": round_no, "reason": why})
            log.warning("round %d: rejected the update of client %d: %s", round_no, client, why)
    if not keep_rows:
        return None, kept, rejections
    batch = {n: torch.stack([r[n] for r in keep_rows]) for n in template}
    return batch, kept, rejections
