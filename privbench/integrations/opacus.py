"""Audit a user's own Opacus DP-SGD loop: canaries in, claim re-accounted, eps_LB and verdict out.

Three calls around the user's loop, which stays theirs:

    audit = OpacusAudit(canaries=300, seed=0)
    loader = audit.plant(loader)                       # canary records join the user's data
    model, optimizer, loader = PrivacyEngine().make_private(module=model, optimizer=optimizer,
                                                            data_loader=loader, ...)
    audit.watch(model, optimizer)                      # before the first step
    ... the user's own training loop ...
    result = audit.result(engine, delta=1e-5)          # eps_LB, verdict, claim vs Opacus

Canaries are drawn with random inclusion bits (probability 1/2 each, independently); only the
included ones join the data, so each is an add/remove-one change of the user's data set, the
relation Opacus's accountant bounds. Two kinds:
- gradient canaries ("dirac", the default): records whose per-sample gradient, as Opacus's
  GradSampleModule computed it, is replaced before Opacus clips it by `canary_norm * C` on one
  parameter coordinate where natural gradients are smallest (privbench.audit.gradient_canaries;
  on digits, first-layer weights of always-blank pixels). Opacus's own Poisson sampling,
  per-sample clipping and noise then act on them as on any record; the noised gradient sum that
  Opacus hands the user's optimizer is read at every step (surface `iterates`: what a white-box
  observer of every step sees) and each canary is scored by the claimed mechanism's likelihood
  ratio;
- input canaries ("mislabelled", "ood"): records in the user's data, scored by their loss under
  the trained model (surface `final_model`).

The claim is read from the user's PrivacyEngine accountant: its history of (noise multiplier,
sample rate, steps) becomes a dp_accounting DpEvent, re-accounted with PLD by privbench's
accounting (privbench.privacy.claim.claim_from_event), and compared with Opacus's own epsilon (for
its
PRV accountant, the interval it guarantees at its stated eps_error).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from privbench.audit.gradient_canaries import quiet_coordinates
from privbench.audit.one_run_bound import one_run_bound
from privbench.audit.verdict import audit_rows
from privbench.integrations.opacus_accounting import dirac_scores, reaccount
from privbench.integrations.opacus_errors import OpacusAuditError
from privbench.integrations.opacus_records import plant_canary_records, without_opacus_hooks
from privbench.integrations.result import AuditResult
from privbench.query.classifier import per_example_losses

CanaryKind = Literal["dirac", "mislabelled", "ood"]


class OpacusAudit:
    """Plants canaries into a user's DataLoader, hooks their Opacus optimizer, scores the run.

    Args:
        canaries: m, the number of canaries drawn (each included with probability 1/2).
        kind: "dirac" (gradient canaries through Opacus's clipping and noise), "mislabelled" or
            "ood" (input canaries scored by their loss).
        canary_norm: a gradient canary's norm, times the clipping norm (>= 1: clipped to C).
        alpha: the lower bound holds with confidence 1 - alpha.
        selection: one-run guess counts chosen on half the canaries ("split") or "union".
        population: (inputs, labels) records outside the training data, to mislabel.
        seed: draws the canaries, their bits and the coordinates.
    """

    def __init__(self, canaries: int = 200, kind: CanaryKind = "dirac", *,
                 canary_norm: float = 1.0, alpha: float = 0.05,
                 selection: Literal["split", "union"] = "split",
                 population: tuple[Any, Any] | None = None, seed: int = 0) -> None:
        if kind not in ("dirac", "mislabelled", "ood"):
            raise OpacusAuditError(f"opacus audit: kind = {kind!r}: use 'dirac', 'mislabelled' "
                                   "or 'ood'")
        if canaries < 4:
            raise OpacusAuditError(f"opacus audit: canaries = {canaries}: a one-run audit needs "
                                   "at least 4 (hundreds to test a claim above 1)")
        if kind == "mislabelled" and population is None:
            raise OpacusAuditError("opacus audit: kind = 'mislabelled' needs population=(inputs, "
                                   "labels) records outside the training data; or use 'ood'")
        if not 0 < alpha < 0.5:
            raise OpacusAuditError(f"opacus audit: alpha = {alpha}: must be in (0, 0.5)")
        self.m, self.kind, self.canary_norm = canaries, kind, canary_norm
        self.alpha, self.selection, self.seed = alpha, selection, seed
        self.population = population
        self.rng = np.random.default_rng([seed, 0xCA9A])
        self.bits = self.rng.random(canaries) < 0.5
        self.x: torch.Tensor | None = None  # (m, *input shape) canary records
        self.y: torch.Tensor | None = None
        self.n_natural = 0
        self._sample: tuple[torch.Tensor, torch.Tensor] | None = None
        self._optimizer: Any = None
        self._pending: list[torch.Tensor] = []
        self._observed: list[np.ndarray] = []
        self._seen = np.zeros(canaries, dtype=np.int64)
        self.coords: np.ndarray | None = None

    # -- before training ---------------------------------------------------------------------

    def plant(self, loader: DataLoader) -> DataLoader:
        """A DataLoader like `loader` over its records plus the included canaries.

        Args:
            loader: the user's DataLoader of (input, label) records, before make_private.

        Returns:
            The DataLoader to hand to `PrivacyEngine.make_private` (same batch size, collate
            function and workers; shuffled when the user's was).
        """
        planted = plant_canary_records(loader, self.kind, self.m, self.bits, self.rng,
                                       self.population)
        self.x, self.y, self._sample, self.n_natural = (planted.x, planted.y, planted.sample,
                                                        planted.n_natural)
        return planted.loader

    def watch(self, module: nn.Module, optimizer: Any) -> None:
        """Hook the module and DPOptimizer that `make_private` returned (before the first step).

        Gradient canaries: a forward pre-hook marks the batch rows that are canary records;
        before Opacus clips, their per-sample gradients become the canary's Dirac vector; after
        Opacus adds its noise, the noised sum is read on every canary's coordinate.

        Args:
            module: the GradSampleModule; optimizer: the DPOptimizer (flat clipping only).
        Raises:
            OpacusAuditError: plant() not called first, or a module, optimizer or frozen parameter
                the canaries cannot work with.
        """
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        if self.x is None or self._sample is None:
            raise OpacusAuditError("opacus audit: call plant(loader) first and hand the loader "
                                   "it returns to make_private")
        if not isinstance(optimizer, DPOptimizer):
            raise OpacusAuditError(
                f"opacus audit: watch() needs the DPOptimizer make_private returned, not a "
                f"{type(optimizer).__name__}: pass the optimizer from make_private")
        if type(optimizer) is not DPOptimizer:
            raise OpacusAuditError(
                f"opacus audit: {type(optimizer).__name__} is not supported: gradient canaries "
                "need flat clipping (clipping='flat') with per-sample gradients (grad_sample_mode "
                "'hooks' or 'functorch')")
        self._optimizer = optimizer
        if self.kind != "dirac":
            return
        if not isinstance(module, GradSampleModule):
            raise OpacusAuditError(f"opacus audit: watch() needs the GradSampleModule "
                                   f"make_private returned, not a {type(module).__name__}")
        inner = module._module
        named = list(inner.named_parameters())
        if any(not p.requires_grad for _, p in named):
            frozen = next(n for n, p in named if not p.requires_grad)
            raise OpacusAuditError(f"opacus audit: parameter {frozen!r} is frozen: gradient "
                                   "canaries need every parameter trained; use kind='ood'")
        x, y = self._sample
        try:
            self.coords = quiet_coordinates(without_opacus_hooks(inner), x.float().numpy(),
                                            y.long().numpy(), self.m, self.rng)
        except ValueError as e:
            raise OpacusAuditError(f"opacus audit: canaries = {self.m}: {e}") from None
        self._locate(named)
        self._table = self.x.reshape(self.m, -1)
        self._probe = torch.from_numpy(self.rng.choice(self._table.shape[1],
                                                       min(8, self._table.shape[1]),
                                                       replace=False))
        module.register_forward_pre_hook(self._mark_rows)
        clip_and_accumulate, add_noise = optimizer.clip_and_accumulate, optimizer.add_noise

        def canaries_then_clip() -> None:
            self._plant_gradients(optimizer)
            clip_and_accumulate()

        def noise_then_read() -> None:
            add_noise()
            self._read_noised_sum()

        optimizer.clip_and_accumulate = canaries_then_clip
        optimizer.add_noise = noise_then_read

    def _locate(self, named: list[tuple[str, torch.Tensor]]) -> None:
        """Each canary coordinate as (parameter, index within it)."""
        assert self.coords is not None
        offsets = np.cumsum([0] + [p.numel() for _, p in named])
        which = np.searchsorted(offsets, self.coords, side="right") - 1
        self._params = [p for _, p in named]
        self._where = [(int(b), int(c - offsets[b])) for b, c in zip(which, self.coords,
                                                                     strict=True)]

    def _mark_rows(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Forward pre-hook: the canary index of each row of a training batch (-1: natural)."""
        if not (module.training and torch.is_grad_enabled()):
            return
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor):
            raise OpacusAuditError("opacus audit: the model's first argument is not a tensor: "
                                   "gradient canaries need batches of input tensors")
        rows = x.detach().reshape(len(x), -1).to(self._table.dtype)
        probe = (rows[:, None, self._probe] == self._table[None, :, self._probe]).all(-1)
        index = torch.full((len(x),), -1, dtype=torch.long)
        hit_rows, hit_canaries = probe.nonzero(as_tuple=True)
        for r, j in zip(hit_rows.tolist(), hit_canaries.tolist(), strict=True):
            if torch.equal(rows[r], self._table[j]):
                index[r] = j
        self._pending.append(index)

    def _plant_gradients(self, optimizer: Any) -> None:
        """Replace each canary row's per-sample gradient by its Dirac vector, before clipping."""
        index = torch.cat(self._pending) if self._pending else torch.zeros(0, dtype=torch.long)
        self._pending = []
        rows = torch.nonzero(index >= 0).flatten()
        for p in self._params:
            chunks = p.grad_sample if isinstance(p.grad_sample, list) else [p.grad_sample]
            total = sum(len(g) for g in chunks)
            if total != len(index):
                raise OpacusAuditError(
                    f"opacus audit: {total} per-sample gradients but {len(index)} rows seen by "
                    "the model since the last step: run every training forward pass through the "
                    "module make_private returned")
        if len(rows) == 0:
            return
        canary = index[rows]
        np.add.at(self._seen, canary.numpy(), 1)
        norm = self.canary_norm * optimizer.max_grad_norm
        for b, p in enumerate(self._params):
            chunks = p.grad_sample if isinstance(p.grad_sample, list) else [p.grad_sample]
            start = 0
            for g in chunks:
                local = rows[(rows >= start) & (rows < start + len(g))] - start
                if len(local):
                    flat = g.view(len(g), -1)
                    flat[local] = 0.0
                    for r in local.tolist():
                        pb, i = self._where[int(index[start + r])]
                        if pb == b:
                            flat[r, i] = norm
                start += len(g)

    def _read_noised_sum(self) -> None:
        """After Opacus's noise: the noised gradient sum on every canary's coordinate."""
        self._observed.append(np.array([float(self._params[b].grad.reshape(-1)[i])
                                        for b, i in self._where]))

    # -- after training ----------------------------------------------------------------------

    def result(self, engine: Any, *, delta: float, module: nn.Module | None = None,
               experiment: str = "opacus") -> AuditResult:
        """Score the canaries and hold the one-run bound against the re-accounted claim.

        Args:
            engine: the user's PrivacyEngine (its accountant holds what ran).
            delta: the delta of the claim.
            module: the trained model (needed for input canaries).
            experiment: the experiment name on the metric rows.

        Returns:
            The bound, the Claim and the "audit" metric rows; `accounting` holds the
            comparison with Opacus's own epsilon.
        """
        if self._optimizer is None:
            raise OpacusAuditError("opacus audit: call watch(model, optimizer) after "
                                   "make_private and before training")
        claim, check = reaccount(engine.accountant, delta, float(self._optimizer.max_grad_norm))
        history = [(float(z), float(q), int(n)) for z, q, n in engine.accountant.history]
        details: dict[str, Any] = {"canary": self.kind, "n_canaries": self.m,
                                   "included": int(self.bits.sum()), **check.to_dict()}
        if self.kind == "dirac":
            scores = dirac_scores(self._observed, self._seen, self.bits,
                                  history, float(self._optimizer.max_grad_norm),
                                  self.canary_norm, self.n_natural, details)
            surface = "iterates"
        else:
            if module is None:
                raise OpacusAuditError("opacus audit: input canaries are scored on the trained "
                                       "model: pass result(..., module=model)")
            was_training = module.training
            scores = -per_example_losses(module, self.x.numpy(), self.y.long().numpy())
            module.train(was_training)
            surface = "final_model"
        rng = np.random.default_rng([self.seed, 0xA0D1])
        bound = one_run_bound(scores, self.bits, delta=delta, alpha=self.alpha,
                              selection=self.selection, rng=rng)
        rows = audit_rows(experiment, bound, claim.epsilon, surface, "one-run", details)
        return AuditResult("opacus", bound, claim, claim.epsilon, rows, surface, details,
                           accounting=check)
