"""White-box gradient canaries for example-level DP-SGD: Dirac per-example gradients.

A Dirac canary is a record whose per-example gradient is `canary_norm * clip` at one coordinate of
the parameters and zero elsewhere (Nasr et al. 2023; Steinke, Nasr, Jagielski 2023). The trainer
samples, clips and noises it like any record (trainers.dpsgd.GradientCanaries). Coordinates are
chosen, blind to the inclusion bits, where the natural records' gradients are smallest on public
data (for the digits MLP: weights fed by pixels that are always blank, whose gradient is exactly
zero), so that on its coordinate a canary competes with the DP noise alone.

The auditor reads the canary's coordinate on the observed models (every round's global model for
`iterates`, the first and last for `final_weights`) and scores it by the likelihood ratio of "a
record sampled at rate q each step" against "absent" under the mechanism the trainer claims: the
Neyman-Pearson test of one canary, hence the strongest white-box score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import special, stats
from torch import nn
from torch.func import functional_call, grad, vmap

from privbench.models.adapter import Batch, Params
from privbench.spec.schema import CellSpec
from privbench.trainers.dpsgd import GradientCanaries
from privbench.trainers.privacy_plan import PrivacyPlan


def quiet_coordinates(model: nn.Module, x: np.ndarray, y: np.ndarray, m: int,
                      rng: np.random.Generator) -> np.ndarray:
    """The m flat parameter coordinates with the smallest mean squared per-example gradient on
    the records (x, y), at the model's current parameters; ties in random order."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    n_params = sum(p.numel() for p in params.values())
    if m > n_params:
        raise ValueError(f"audit.n_canaries = {m}: the model has only {n_params} parameters, one "
                         "per Dirac canary; lower it or widen model.hidden")

    def loss(p: Params, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, p, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(
        params, torch.from_numpy(x).float(), torch.from_numpy(y).long())
    energy = torch.cat([g.pow(2).mean(dim=0).flatten() for g in grads.values()]).double().numpy()
    return np.lexsort((rng.random(n_params), energy))[:m]


def quiet_adapter_coordinates(adapter: Any, public: Batch | None, records: Batch | None, m: int,
                              rng: np.random.Generator, chunk: int = 64) -> np.ndarray:
    """`quiet_coordinates` for any model adapter (a language model's LoRA or full parameters):
    the m trainable coordinates that the records move least at the initial parameters. The
    energy is the mean squared per-example gradient on the public batch (the trainer's own
    per-example engine) plus the squared mean gradient of each chunk of the training records
    (one backward pass a chunk), both blind to the inclusion bits. Coordinates neither moves
    come first (a learned position embedding's rows past the longest record, embeddings of
    tokens no record holds in an untied model): there a canary competes with the noise alone,
    and without DP with nothing at all.

    Args:
        adapter: the model adapter the trainer trains.
        public: a public batch (name -> (N, ...)), or None.
        records: the training records as one flat batch, or None.
        m: the canaries; rng: the tie-breaking stream.
        chunk: records per backward pass.
    Returns:
        (m,) flat coordinates in the order of the adapter's trainable parameters.
    """
    from privbench.trainers.client_update import minibatch_gradient
    from privbench.trainers.per_example import per_example_grads

    params = adapter.init_params()
    n_params = sum(p.numel() for p in params.values())
    if m > n_params:
        raise ValueError(f"audit.n_canaries = {m}: the model has only {n_params} trainable "
                         "parameters, one per Dirac canary; lower it")
    energy = torch.zeros(n_params, dtype=torch.float64)
    if public is not None:
        grads = per_example_grads(adapter, {n: p.unsqueeze(0) for n, p in params.items()},
                                  {n: v.unsqueeze(0) for n, v in public.items()})
        energy += torch.cat([g[0].pow(2).mean(dim=0).flatten() for g in grads.values()]).double()
    if records is not None:
        n = len(next(iter(records.values())))
        for i in range(0, n, chunk):  # the mean gradient of a chunk, as local SGD takes it
            grads = minibatch_gradient(adapter, params, {k: v[i:i + chunk]
                                                         for k, v in records.items()})
            energy += torch.cat([grads[k].pow(2).flatten() for k in params]).double()
    return np.lexsort((rng.random(n_params), energy.numpy()))[:m]


def plant_dirac_canaries(bits: np.ndarray, coords: np.ndarray, norm: float,
                         owners: np.ndarray, n_clients: int) -> GradientCanaries:
    """The trainer's view: each included canary is a record of its owner (client 0 in
    centralised DP-SGD)."""
    present = torch.zeros((n_clients, len(bits)), dtype=torch.bool)
    j = np.flatnonzero(np.asarray(bits, dtype=bool))
    present[torch.from_numpy(np.asarray(owners)[j]), torch.from_numpy(j)] = True
    return GradientCanaries(present, torch.from_numpy(np.asarray(coords, dtype=np.int64)), norm)


def coordinate_values(snapshots: list[Params], coords: np.ndarray) -> np.ndarray:
    """Each snapshot's parameters at `coords`: shape (len(coords), len(snapshots))."""
    flat = [torch.cat([p.detach().flatten() for p in s.values()]).double().numpy()[coords]
            for s in snapshots]
    return np.stack(flat, axis=-1)


def dirac_log_likelihood_ratio(sums: np.ndarray, steps: np.ndarray, variances: np.ndarray,
                               sampling_rate: float, signal: float) -> np.ndarray:
    """log p_in / p_out of each canary's observed segment sums under the claimed mechanism.

    sums (..., S): the noised gradient sums on the canary's coordinate over S observed segments;
    segment s is `steps[s]` DP-SGD steps with total noise variance `variances[s]`. In, the
    canary joins k ~ Binomial(steps, q) of them, adding k * signal; out, the sum is pure noise:

        LLR_s(x) = log sum_k Binomial(k; n, q) exp((signal k x - signal^2 k^2 / 2) / var).

    The sum is a polynomial in exp(signal x / var) with positive coefficients, so it is
    evaluated by Horner's rule (one exp a value, no cancellation: within a few ulp of the
    log-sum-exp) wherever no term can overflow or underflow; elsewhere, and for segments whose
    coefficients span too wide a range, by scipy's logsumexp. The power's simulations score
    60,000 canaries at each noise scale searched, so this is most of a design's cost.
    """
    sums = np.asarray(sums, dtype=np.float64)
    total = np.zeros(sums.shape[:-1])
    for s, (length, var) in enumerate(zip(steps, variances, strict=True)):
        n = int(length)
        k = np.arange(n + 1, dtype=np.float64)
        log_c = stats.binom.logpmf(k, n, min(sampling_rate, 1.0)) - 0.5 * signal**2 * k**2 / var
        t = (signal / var) * sums[..., s]
        total += _log_polynomial_exp(log_c, t)
    return total


# exp() stays finite and normal within e^+-708: Horner's terms keep inside this margin
_EXP_RANGE = 700.0


def _log_polynomial_exp(log_c: np.ndarray, t: np.ndarray) -> np.ndarray:
    """log sum_k exp(log_c[k] + k t) for every t: Horner's rule in y = exp(t) on coefficients
    scaled by their largest, where every coefficient and every term c_k y^k is a normal float
    (the span of log_c plus n |t| within _EXP_RANGE), logsumexp at the other t."""
    n = len(log_c) - 1

    def direct(at: np.ndarray) -> np.ndarray:
        return special.logsumexp(log_c + np.multiply.outer(at, np.arange(n + 1)), axis=-1)

    top = float(np.max(log_c))
    span = top - float(np.min(log_c))
    if n == 0 or not np.isfinite(span) or span >= _EXP_RANGE:
        return direct(t)
    safe = np.abs(t) * n < _EXP_RANGE - span
    c = np.exp(log_c - top)
    y = np.exp(np.where(safe, t, 0.0))
    acc = np.full_like(y, c[n])
    for j in range(n - 1, -1, -1):
        acc *= y
        acc += c[j]
    out = np.log(acc) + top
    if not safe.all():  # NaN sums land here too, and stay NaN
        out[~safe] = direct(t[~safe])
    return out


@dataclass(frozen=True)
class DiracMechanism:
    """The claimed mechanism as one canary's coordinate sees it, round by round."""

    step_scale: float  # parameter change per unit of the noised sum: lr * server_lr / batch
    local_steps: int  # DP-SGD steps per round
    round_stds: np.ndarray  # per round: the noise std of one step's sum, z_r * C
    sampling_rate: float
    signal: float  # a canary's clipped gradient on its coordinate

    def segments(self, rounds: int, per_round: bool) -> tuple[np.ndarray, np.ndarray]:
        """(steps, noise variance) of each observed segment: one per round when every round's
        model is seen (`iterates`), else one for the whole run (`final_weights`)."""
        var = self.local_steps * self.round_stds[:rounds] ** 2
        steps = np.full(rounds, self.local_steps)
        if per_round:
            return steps, var
        return np.array([steps.sum()]), np.array([var.sum()])

    def scores(self, values: np.ndarray, rounds: int) -> np.ndarray:
        """Log-likelihood ratios from each canary's coordinate (rows) on the observed models
        (columns): the initial model and after every round (rounds + 1), or first and last (2)."""
        per_round = values.shape[-1] == rounds + 1
        if not per_round and values.shape[-1] != 2:
            raise ValueError(f"{values.shape[-1]} snapshots: need {rounds + 1} or 2")
        sums = -np.diff(values, axis=-1) / self.step_scale
        steps, var = self.segments(rounds, per_round)
        return dirac_log_likelihood_ratio(sums, steps, var, self.sampling_rate, self.signal)


    def simulate(self, rounds: int, per_round: bool, included: bool, n: int,
                 rng: np.random.Generator) -> np.ndarray:
        """Scores of n canaries drawn from the claimed mechanism itself (no training): what a
        correct trainer would give, for designing a test before any run."""
        steps, var = self.segments(rounds, per_round)
        sums = rng.normal(size=(n, len(steps))) * np.sqrt(var)
        if included:
            sums += self.signal * rng.binomial(steps, min(self.sampling_rate, 1.0), (n, len(steps)))
        return dirac_log_likelihood_ratio(sums, steps, var, self.sampling_rate, self.signal)


def claimed_mechanism(spec: CellSpec, plan: PrivacyPlan) -> DiracMechanism:
    """What the example-level plan says each canary's coordinate goes through."""
    t, p = spec.train, spec.privacy
    stds = np.array([plan.update_noise_multiplier(r) * p.clip for r in range(t.rounds)])
    return DiracMechanism(step_scale=t.lr * t.server_lr / t.batch_size,
                          local_steps=plan.local_steps, round_stds=stds,
                          sampling_rate=plan.record_rate,
                          signal=p.clip * min(1.0, spec.audit.canary_norm))
