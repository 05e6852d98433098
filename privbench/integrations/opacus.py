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

import copy as copy_module
import math
from dataclasses import dataclass
from typing import Any, Literal

import dp_accounting
import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler, TensorDataset

from privbench.audit.canaries import input_canaries
from privbench.audit.estimators import one_run_bound
from privbench.audit.gradient_canaries import dirac_log_likelihood_ratio, quiet_coordinates
from privbench.audit.verdict import audit_rows
from privbench.data.splits import SplitData
from privbench.errors import PrivbenchError
from privbench.integrations.result import AuditResult
from privbench.privacy import accounting
from privbench.privacy.claim import Claim, claim_from_event
from privbench.query.classifier import per_example_losses

CanaryKind = Literal["dirac", "mislabelled", "ood"]
# Natural records read from the user's data set to choose quiet coordinates and the feature range.
SAMPLE_RECORDS = 512
# Opacus's PRV accountant: the accuracy it is asked for (its get_epsilon default).
PRV_EPS_ERROR = 0.01


class OpacusAuditError(PrivbenchError):
    """A loop, model or accountant the Opacus audit cannot use: one line naming what and the fix."""


@dataclass(frozen=True)
class AccountingCheck:
    """privbench's PLD epsilon of the accountant's history beside Opacus's own figure."""

    mechanism: str  # Opacus accountant: prv, rdp or gdp
    opacus_epsilon: float
    pld_epsilon: float
    opacus_interval: tuple[float, float] | None  # PRV: [lower, upper] at its stated accuracy
    agrees: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"opacus_accountant": self.mechanism, "opacus_epsilon": self.opacus_epsilon,
                "pld_epsilon": self.pld_epsilon,
                "opacus_interval": list(self.opacus_interval) if self.opacus_interval else None,
                "accountants_agree": self.agrees, "accounting_note": self.note}


def history_event(history: list[tuple[float, float, int]]) -> dp_accounting.DpEvent:
    """The DpEvent of an Opacus accountant's history: each (noise multiplier, sample rate,
    steps) entry is that many Poisson-subsampled Gaussian steps, composed in order."""
    parts = [accounting.poisson_gaussian_event(float(z), float(q), int(n))
             for z, q, n in history]
    if not parts:
        return dp_accounting.NoOpDpEvent()
    return parts[0] if len(parts) == 1 else dp_accounting.ComposedDpEvent(parts)


def reaccount(accountant: Any, delta: float, clip: float | None) -> tuple[Claim, AccountingCheck]:
    """The Claim of an Opacus accountant's history, accounted with PLD by privbench, and how it
    compares with the epsilon Opacus reports itself.

    Args:
        accountant: the user's `PrivacyEngine().accountant` (prv, rdp or gdp), after training.
        delta: the delta of the claim.
        clip: the per-sample clipping norm that ran (the DPOptimizer's max_grad_norm).

    Returns:
        (the Claim, the comparison with Opacus's epsilon).
    """
    history = [(float(z), float(q), int(n)) for z, q, n in getattr(accountant, "history", [])]
    if not history:
        raise OpacusAuditError("opacus audit: the PrivacyEngine accountant has no history: train "
                               "at least one step with the optimizer make_private returned")
    event = history_event(history)
    steps = sum(n for _, _, n in history)
    zs, qs = {z for z, _, _ in history}, {q for _, q, _ in history}
    mechanism = accountant.mechanism()
    claim = claim_from_event(
        event, delta=delta, target_epsilon=math.inf, unit="example",
        neighbouring="add_or_remove_one", sampling="poisson" if max(qs) < 1 else "none",
        noise_multiplier=min(zs), sampling_rate=max(qs), steps=steps, clip=clip,
        guarantee_against=["anyone who sees the trained model or any step's noised gradient"],
        notes=[f"re-accounted from Opacus's {mechanism} accountant history "
               f"({len(history)} segment(s), {steps} steps); Poisson sampling as Opacus assumes"])
    check = _compare(accountant, mechanism, history, delta, claim.epsilon,
                     steps * (claim.pld_grid or 0.0))
    claim.notes.append(check.note)
    return claim, check


def _compare(accountant: Any, mechanism: str, history: list[tuple[float, float, int]],
             delta: float, pld_eps: float, pld_slack: float) -> AccountingCheck:
    """Opacus's own epsilon beside the PLD one; for PRV, the interval it guarantees."""
    opacus_eps = float(accountant.get_epsilon(delta))
    interval = None
    if mechanism == "prv":
        # Opacus reports the upper end of [lower, upper], which holds the true epsilon at its
        # stated accuracy (eps_error, delta_error = delta / 1000).
        dprv = accountant._get_dprv(eps_error=PRV_EPS_ERROR, delta_error=delta / 1000)
        lower, _, upper = dprv.compute_epsilon(delta, delta / 1000, PRV_EPS_ERROR)
        interval = (float(lower), float(upper))
        # PLD is pessimistic: at most one grid step of privacy loss above the truth per step.
        agrees = interval[0] - 1e-9 <= pld_eps <= interval[1] + pld_slack
        note = (f"PLD epsilon {pld_eps:.4f}; Opacus PRV {opacus_eps:.4f}, true epsilon in "
                f"[{lower:.4f}, {upper:.4f}] at eps_error {PRV_EPS_ERROR}: "
                + ("agree" if agrees else f"DISAGREE by {pld_eps - opacus_eps:+.4f}"))
    elif mechanism == "rdp":
        agrees = pld_eps <= opacus_eps + pld_slack
        note = (f"PLD epsilon {pld_eps:.4f}; Opacus RDP {opacus_eps:.4f} (an upper bound, "
                f"looser by {opacus_eps - pld_eps:+.4f})"
                + ("" if agrees else ": DISAGREE, PLD above the RDP bound"))
    else:
        agrees = abs(pld_eps - opacus_eps) <= 0.05 * max(pld_eps, 1.0)
        note = (f"PLD epsilon {pld_eps:.4f}; Opacus {mechanism} {opacus_eps:.4f} (an "
                f"approximation, differs by {opacus_eps - pld_eps:+.4f})")
    return AccountingCheck(mechanism, opacus_eps, pld_eps, interval, agrees, note)


def _records(dataset: Dataset, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `limit` (input, label) records of the user's data set, as two stacked tensors."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        x, y = dataset.tensors
        return x[:limit], y[:limit]
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise OpacusAuditError("opacus audit: the DataLoader's data set is empty")
    xs, ys = [], []
    for i in range(min(limit, len(dataset))):  # type: ignore[arg-type]
        item = dataset[i]
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise OpacusAuditError(
                f"opacus audit: data set item {i} is a {type(item).__name__}, not an (input, "
                "label) pair; plant canaries into a DataLoader over (input, label) records")
        xs.append(torch.as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
    return torch.stack(xs), torch.stack(ys)


def _without_hooks(module: nn.Module) -> nn.Module:
    """A copy of the user's model without Opacus's capture hooks (torch.func cannot trace them),
    for choosing coordinates at the initial parameters."""
    copy = copy_module.deepcopy(module)
    for sub in copy.modules():
        for hooks in (sub._forward_hooks, sub._forward_pre_hooks, sub._backward_hooks,
                      sub._backward_pre_hooks):
            hooks.clear()
    return copy


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
        if not isinstance(loader, DataLoader):
            raise OpacusAuditError(f"opacus audit: plant() takes the DataLoader you pass to "
                                   f"make_private, not a {type(loader).__name__}")
        x, y = _records(loader.dataset, SAMPLE_RECORDS)
        if x.dtype.is_floating_point is False or y.dtype.is_floating_point:
            raise OpacusAuditError(f"opacus audit: records are ({x.dtype}, {y.dtype}): canaries "
                                   "need float inputs and integer class labels")
        self._sample = (x, y)
        self.n_natural = len(loader.dataset)  # type: ignore[arg-type]
        n_classes = int(y.max()) + 1
        flat = x.reshape(len(x), -1).numpy()
        pop = (np.zeros((0, flat.shape[1]), np.float32), np.zeros(0, np.int64))
        if self.population is not None:
            px, py = (torch.as_tensor(a) for a in self.population)
            pop = (px.reshape(len(px), -1).float().numpy(), py.long().numpy())
            n_classes = max(n_classes, int(py.max()) + 1)
        split = SplitData("user", flat, y.long().numpy(), flat[:0], y.long().numpy()[:0],
                          pop[0], pop[1], n_classes)
        kind = "ood" if self.kind == "dirac" else self.kind
        try:
            cx, cy = input_canaries(kind, split, self.m, self.rng)
        except PrivbenchError as e:
            raise OpacusAuditError(f"opacus audit: canaries = {self.m}: {e}") from None
        self.x = torch.from_numpy(np.asarray(cx)).to(x.dtype).reshape(self.m, *x.shape[1:])
        self.y = torch.from_numpy(np.asarray(cy)).to(y.dtype)
        included = TensorDataset(self.x[self.bits], self.y[self.bits])
        shuffled = isinstance(loader.sampler, RandomSampler)
        return DataLoader(ConcatDataset([loader.dataset, included]),
                          batch_size=loader.batch_size, shuffle=shuffled,
                          num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                          pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                          generator=loader.generator)

    def watch(self, module: nn.Module, optimizer: Any) -> None:
        """Hook the module and DPOptimizer that `make_private` returned (before the first step).

        Gradient canaries: a forward pre-hook marks the batch rows that are canary records;
        before Opacus clips, their per-sample gradients become the canary's Dirac vector; after
        Opacus adds its noise, the noised sum is read on every canary's coordinate.
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
            self.coords = quiet_coordinates(_without_hooks(inner), x.float().numpy(),
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
            scores = self._dirac_scores(history, details)
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

    def _dirac_scores(self, history: list[tuple[float, float, int]],
                      details: dict[str, Any]) -> np.ndarray:
        """Log-likelihood ratios of each gradient canary under the claimed mechanism."""
        steps = sum(n for _, _, n in history)
        if len(self._observed) != steps:
            raise OpacusAuditError(
                f"opacus audit: the accountant counted {steps} steps but the audit saw "
                f"{len(self._observed)}: call watch() right after make_private, before training")
        if self.bits.any() and self._seen[self.bits].sum() == 0:
            raise OpacusAuditError(
                "opacus audit: no planted canary reached the model: train on the DataLoader "
                "make_private returned and feed its inputs to the model unchanged")
        sums = np.stack(self._observed, axis=1)  # (m, steps)
        clip = float(self._optimizer.max_grad_norm)
        signal = clip * min(1.0, self.canary_norm)
        # The sampling rate expected before the bits were drawn (scores must not read them):
        # the accountant's rate rescaled from the realised data size to N + m / 2.
        size = self.n_natural + int(self.bits.sum())
        expected = (self.n_natural + self.m / 2) / size
        total = np.zeros(self.m)
        start = 0
        for z, q, n in history:
            var = np.full(n, (z * clip) ** 2)
            total += dirac_log_likelihood_ratio(sums[:, start:start + n], np.ones(n), var,
                                                min(q / expected, 1.0), signal)
            start += n
        details["canary_sampled_mean"] = float(self._seen[self.bits].mean())
        return total
