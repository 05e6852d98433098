"""SGD or Adam over a dict of tensors whose first dimension may hold independent rows.

One optimizer for the whole trainer: clients' local steps (rows = clients, or runs x clients),
DP-SGD steps on the noised gradient (post-processing: no privacy cost) and the server's step on
the mean update (FedAvg with `server_lr`, or DP-FedAdam).
"""

from __future__ import annotations

from typing import Literal

import torch

from privbench.models.adapter import Params

OptimizerName = Literal["sgd", "adam"]
OPTIMIZERS = ("sgd", "adam")


class RowOptimizer:
    """SGD or Adam on `params`, updated in place, with an independent state per row.

    `active` (rows,) freezes the rows that take no step this time: their parameters and moments
    stay as they are, as if the step never happened (a client past its last example).

    Args:
        kind: "sgd" or "adam".
        params: the parameters it will update (for the moments' shapes).
        lr: the learning rate.
        rows: the number of independent rows (first dimension), or None for one parameter set.
        betas, eps: Adam's constants.
    """

    def __init__(self, kind: str, params: Params, lr: float, rows: int | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        if kind not in OPTIMIZERS:
            raise ValueError(f"optimizer {kind!r}: use one of {', '.join(OPTIMIZERS)}")
        self.kind, self.lr, self.betas, self.eps = kind, lr, betas, eps
        adam = kind == "adam"
        self.m = {n: torch.zeros_like(p) for n, p in params.items()} if adam else {}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()} if adam else {}
        self.t = torch.zeros(rows if rows is not None else ())

    def step(self, params: Params, grads: Params, active: torch.Tensor | None = None,
             scale: float = 1.0) -> None:
        """Update `params` in place with the gradient `grads / scale`.

        Args:
            params: the parameters, changed in place.
            grads: the gradient (same shapes), before division by `scale`.
            active: (rows,) bool, the rows that step; None: all.
            scale: divides the gradient (DP-SGD's expected batch size); SGD computes
                `lr * g / scale` in that order.
        """
        if self.kind == "sgd" and (active is None or bool(active.all())):
            for name, p in params.items():  # every row steps: no mask to apply
                p -= self.lr * grads[name] / scale if scale != 1.0 else self.lr * grads[name]
            return
        on = torch.ones_like(self.t) if active is None else active.float()
        self.t += on
        b1, b2 = self.betas
        for name, p in params.items():
            shape = (-1, *([1] * (p.dim() - 1))) if self.t.dim() else ()
            mask = on.view(shape)
            g = grads[name]
            if self.kind == "sgd":
                p -= mask * self.lr * g / scale if scale != 1.0 else mask * self.lr * g
                continue
            g = g / scale if scale != 1.0 else g
            self.m[name] = torch.lerp(self.m[name], self.m[name] * b1 + (1 - b1) * g, mask)
            self.v[name] = torch.lerp(self.v[name], self.v[name] * b2 + (1 - b2) * g * g, mask)
            t = self.t.clamp(min=1).view(shape)
            step = (self.m[name] / (1 - b1**t)) / ((self.v[name] / (1 - b2**t)).sqrt() + self.eps)
            p -= mask * self.lr * step

    def state(self) -> Params:
        """The optimizer's state as named tensors (for checkpoints); empty for SGD."""
        if self.kind == "sgd":
            return {}
        return {"t": self.t.clone(), **{f"m.{n}": m for n, m in self.m.items()},
                **{f"v.{n}": v for n, v in self.v.items()}}

    def load_state(self, tensors: Params) -> None:
        """Restore a state written by `state` (nothing to restore for SGD)."""
        if self.kind == "sgd" or not tensors:
            return
        self.t = tensors["t"].clone()
        self.m = {n: tensors[f"m.{n}"].clone() for n in self.m}
        self.v = {n: tensors[f"v.{n}"].clone() for n in self.v}
