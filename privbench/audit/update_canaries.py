"""Update-space canaries of client-level audits: their random frame, and the trainer hook that
sends a sampled canary client's vector in place of its update (privbench.audit.canaries plants
them; the update then goes through the clipping, noise and mean of every client's)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import linalg

from privbench.models.adapter import Params

if TYPE_CHECKING:  # the canaries' type only (privbench.audit.canaries imports this module)
    from privbench.audit.canaries import CanarySet


def orthonormal_directions(rng: np.random.Generator, m: int, d: int) -> np.ndarray:
    """m random unit vectors in R^d, orthonormal when m <= d (a uniformly random frame: the Q of
    a Gaussian matrix's QR with R's diagonal positive): included canaries then add nothing along
    an excluded one's direction, so the audit sees each canary's own signal and the noise, not
    the others.

    That Q is unique, so it is computed the cheaper way where that is exact to rounding: for
    d >= 4m the Gaussian d x m matrix G has condition number at most about 3, and Cholesky QR
    (R = chol(G^T G)^T, Q = G R^-1: two matrix products' work) gives the same frame as
    Householder QR to ~1e-15, orthonormal to ~1e-15, at a third of the time; closer to square,
    Householder QR."""
    g = rng.normal(size=(d, m))
    if m > d:
        return (g / np.linalg.norm(g, axis=0)).T
    if d >= 4 * m:
        lower = np.linalg.cholesky(g.T @ g)  # G^T G = L L^T, R = L^T (positive diagonal)
        return linalg.solve_triangular(lower, g.T, lower=True, check_finite=False)
    q, r = np.linalg.qr(g)
    return (q * np.sign(np.diag(r))).T


class CanaryUpdateHook:
    """Trainer hook: replace sampled canary clients' updates by their canary vectors."""

    def __init__(self, canaries: CanarySet) -> None:
        assert canaries.vectors is not None
        included = np.flatnonzero(canaries.bits)
        ids = canaries.client_ids[included]
        self.client_ids = torch.as_tensor(ids, dtype=torch.long)
        # canary row of each client id (-1: a real client): one lookup per round, no Python loop
        self.row_of = torch.full((int(ids.max()) + 1 if len(ids) else 0,), -1, dtype=torch.long)
        self.row_of[self.client_ids] = torch.as_tensor(included, dtype=torch.long)
        self.vectors = torch.from_numpy(canaries.vectors * canaries.norm).float()
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # (cohort, its rows)

    def _rows(self, sampled: torch.Tensor) -> torch.Tensor:
        """The canary row of each position of `sampled` (-1 where it holds a real client);
        the round's `canary_mask` and call look the same cohort up once."""
        if self._last is not None and self._last[0] is sampled:
            return self._last[1]
        if not len(self.row_of) or not len(sampled):
            rows = torch.full_like(sampled, -1)
        elif int(sampled.max()) < len(self.row_of):  # canary ids follow the real ones'
            rows = self.row_of[sampled]
        else:
            inside = sampled < len(self.row_of)
            rows = torch.where(inside, self.row_of[torch.where(inside, sampled, 0)], -1)
        self._last = (sampled, rows)
        return rows

    def canary_mask(self, sampled: torch.Tensor) -> torch.Tensor:
        """True at each position of `sampled` that holds a canary client (its update is replaced,
        so the trainer need not train it)."""
        return self._rows(sampled) >= 0

    def __call__(self, round_index: int, sampled: torch.Tensor, updates: Params) -> Params:
        """The round's updates with each sampled canary client's row set to its vector, in
        place (the trainer hands the hook tensors it built for the round: ClientUpdateHook)."""
        rows = self._rows(sampled)
        pos = torch.nonzero(rows >= 0).flatten()
        if not len(pos):
            return updates
        rows = rows[pos]
        blocks = self._blocks(updates)
        for name, u in updates.items():
            u.index_copy_(0, pos, blocks[name].index_select(0, rows))
        return updates

    def _blocks(self, updates: Params) -> Params:
        """The canary vectors cut into the updates' tensors (in their order), each (rows, ...)
        contiguous: cut once, then every round only picks its sampled canaries' rows."""
        shapes = [(name, tuple(u.shape[1:])) for name, u in updates.items()]
        if getattr(self, "_cut", None) is None or self._cut[0] != shapes:
            out, offset = {}, 0
            for name, shape in shapes:
                size = math.prod(shape)
                out[name] = self.vectors[:, offset:offset + size].reshape(-1, *shape).contiguous()
                offset += size
            self._cut = (shapes, out)
        return self._cut[1]
