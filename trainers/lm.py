"""Private fine-tuning of Hugging Face language models: LoRA (peft) or full fine-tuning, with
client-level DP-FedAvg (privacy.unit = "client") or sample-level DP-SGD (privacy.unit = "example").

Gradients are taken functionally (torch.func.functional_call) with respect to the trainable
parameters only. DP-SGD's per-example gradients are `vmap(grad(loss of one example))`; clipping and
the noisy sum are trainers.aggregation's `clip_updates` and `dp_fedavg` with rows = examples,
exactly as DP-FedAvg uses them with rows = clients. The noise multiplier is calibrated with PLD for
the planned steps, and the Claim is accounted from the steps that ran.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from peft import LoraConfig, TaskType, get_peft_model
from torch import nn
from torch.func import functional_call, grad, vmap

from privbench.accounting import calibrate_noise_multiplier
from privbench.claim import Claim, claim_for_poisson_gaussian
from privbench.lm.tokens import attention_mask
from privbench.spec import LMSpec, PrivacySpec, TrainSpec
from privbench.trained import Observations, TrainedModel
from privbench.trainers.aggregation import clip_updates, dp_fedavg, fedavg_mean, update_norms
from privbench.trainers.fedavg import CENTRAL_DP_OBSERVERS

Params = dict[str, torch.Tensor]
RoundCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Examples:
    """Tokenised training examples: ids (N, T), target weights (N, T-1), labels and clients."""

    ids: torch.Tensor
    weights: torch.Tensor
    labels: torch.Tensor
    clients: torch.Tensor

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def prepare_for_finetuning(model: nn.Module, lm: LMSpec, task: str) -> nn.Module:
    """Wrap `model` with LoRA adapters (peft) or leave every parameter trainable; eval mode.

    Attention runs eagerly: transformers' SDPA path checks masks with data-dependent Python
    control flow, which vmap cannot trace.
    """
    model.set_attn_implementation("eager")
    if lm.finetune == "lora":
        config = LoraConfig(
            r=lm.lora_r, lora_alpha=lm.lora_alpha, lora_dropout=0.0,
            fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2",  # Conv1D layout
            target_modules=list(lm.lora_targets) or None,
            task_type=TaskType.CAUSAL_LM if task == "causal_lm" else TaskType.SEQ_CLS)
        model = get_peft_model(model, config)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.eval()  # no dropout: per-example gradients are exact and training is deterministic
    return model


def trainable_params(model: nn.Module) -> Params:
    """Detached copies of the trainable parameters (tied weights appear once)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class Objective:
    """The training loss of a causal LM (mean next-token NLL) or a sequence classifier (CE)."""

    def __init__(self, model: nn.Module, task: str) -> None:
        self.model = model
        self.task = task

    def losses(self, params: Params, ids: torch.Tensor, weights: torch.Tensor,
               labels: torch.Tensor) -> torch.Tensor:
        """Per-example loss (B,) of a batch under `params` (the trainable ones)."""
        out = functional_call(self.model, params, (ids,),
                              {"attention_mask": attention_mask(weights)})
        if self.task == "causal_lm":
            nll = F.cross_entropy(out.logits[:, :-1].transpose(1, 2), ids[:, 1:],
                                  reduction="none")
            return (nll * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return F.cross_entropy(out.logits, labels, reduction="none")

    def example_loss(self, params: Params, ids: torch.Tensor, weights: torch.Tensor,
                     label: torch.Tensor) -> torch.Tensor:
        """The loss of one example (unbatched inputs), for per-example gradients under vmap."""
        return self.losses(params, ids.unsqueeze(0), weights.unsqueeze(0), label.unsqueeze(0))[0]

    def mean_loss(self, params: Params, ids: torch.Tensor, weights: torch.Tensor,
                  labels: torch.Tensor) -> torch.Tensor:
        return self.losses(params, ids, weights, labels).mean()


def per_example_grads(objective: Objective, params: Params, ids: torch.Tensor,
                      weights: torch.Tensor, labels: torch.Tensor) -> Params:
    """Each example's gradient, stacked (B, ...): vmap(grad(loss of one example))."""
    return vmap(grad(objective.example_loss), in_dims=(None, 0, 0, 0))(params, ids, weights,
                                                                        labels)


def clipped_gradient_sum(objective: Objective, params: Params, ex: Examples, idx: torch.Tensor,
                         clip: float, microbatch: int) -> tuple[Params, torch.Tensor]:
    """Per-example gradients of the examples `idx`, each clipped to `clip`, summed in microbatches.

    Returns the partial sums stacked (n_microbatches, ...) (their sum is the clipped sum) and every
    example's unclipped gradient norm.
    """
    sums: list[Params] = []
    norms = []
    for chunk in idx.split(microbatch):
        g = per_example_grads(objective, params, ex.ids[chunk], ex.weights[chunk],
                              ex.labels[chunk])
        clipped, n = clip_updates(g, clip)
        sums.append({name: c.sum(dim=0) for name, c in clipped.items()})
        norms.append(n)
    stacked = {name: torch.stack([s[name] for s in sums]) for name in params}
    return stacked, torch.cat(norms)


def train_lm(model: nn.Module, task: str, ex: Examples, n_clients: int, train: TrainSpec,
             privacy: PrivacySpec, lm: LMSpec, seed: int,
             on_round: RoundCallback | None = None) -> TrainedModel:
    """Fine-tune `model` (already prepared) on `ex` and return it with its Claim."""
    objective = Objective(model, task)
    params = trainable_params(model)
    if privacy.unit == "example":
        params, claim, history = _dp_sgd(objective, params, ex, train, privacy, lm, seed,
                                         on_round)
    else:
        params, claim, history = _dp_fedavg(objective, params, ex, n_clients, train, privacy,
                                            lm, seed, on_round)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in params:
                p.copy_(params[name])
    observations = Observations(
        final_params={name: p.clone() for name, p in params.items()},
        exposed={"final_model": "anyone querying the released model",
                 "final_weights": "anyone holding the released weights"},
    )
    return TrainedModel(model=model, claim=claim, observations=observations, history=history)


def _generators(seed: int) -> tuple[torch.Generator, torch.Generator, torch.Generator]:
    # Separate streams: across the cells of a sweep the same batches are drawn; only noise differs.
    return tuple(torch.Generator().manual_seed(seed * 1_000_003 + 11 + i) for i in range(3))


def _dp_sgd(objective: Objective, params: Params, ex: Examples, train: TrainSpec,
            privacy: PrivacySpec, lm: LMSpec, seed: int,
            on_round: RoundCallback | None) -> tuple[Params, Claim, list[dict[str, Any]]]:
    """Sample-level DP-SGD: train.rounds steps on Poisson batches of expected train.batch_size,
    the noisy mean gradient fed to lm.optimizer (post-processing: no privacy cost)."""
    n = len(ex)
    q = min(1.0, train.batch_size / n)
    private = math.isfinite(privacy.epsilon)
    z = (calibrate_noise_multiplier(privacy.epsilon, privacy.delta, q, train.rounds,
                                    privacy.neighbouring) if private else 0.0)
    sampling_gen, _, noise_gen = _generators(seed)
    leaves = {name: p.clone() for name, p in params.items()}
    opt = RowOptimizer(lm.optimizer, leaves, train.lr)
    mean_grad = grad(objective.mean_loss)
    history: list[dict[str, Any]] = []
    for step in range(train.rounds):
        idx = torch.nonzero(torch.rand(n, generator=sampling_gen) < q).flatten()
        record: dict[str, Any] = {"round": step + 1, "batch": int(idx.numel())}
        if private:
            sums = (clipped_gradient_sum(objective, leaves, ex, idx, privacy.clip,
                                         lm.microbatch)[0] if idx.numel() else None)
            g, _ = dp_fedavg(sums, leaves, clip=privacy.clip, noise_multiplier=z,
                             expected_cohort=train.batch_size, generator=noise_gen)
        elif idx.numel():
            g = mean_grad(leaves, ex.ids[idx], ex.weights[idx], ex.labels[idx])
        else:
            g = None
        if g is not None:
            opt.step(leaves, g)
        history.append(record)
        if on_round is not None:
            on_round(step + 1, train.rounds)
    return leaves, _claim(z, q, train, privacy, "example"), history


def _dp_fedavg(objective: Objective, params: Params, ex: Examples, n_clients: int,
               train: TrainSpec, privacy: PrivacySpec, lm: LMSpec, seed: int,
               on_round: RoundCallback | None) -> tuple[Params, Claim, list[dict[str, Any]]]:
    """Client-level DP-FedAvg: Poisson cohorts, local training on every sampled client at once;
    the server applies the noisy mean update with SGD (server_lr) or Adam (DP-FedAdam)."""
    q = train.cohort / n_clients
    private = math.isfinite(privacy.epsilon)
    z = (calibrate_noise_multiplier(privacy.epsilon, privacy.delta, q, train.rounds,
                                    privacy.neighbouring) if private else 0.0)
    sampling_gen, local_gen, noise_gen = _generators(seed)
    rows, counts = _client_rows(ex.clients, n_clients)
    server = RowOptimizer(lm.server_optimizer, params, train.server_lr)
    params = {name: p.clone() for name, p in params.items()}
    history: list[dict[str, Any]] = []
    for r in range(train.rounds):
        sampled = torch.nonzero(torch.rand(n_clients, generator=sampling_gen) < q).flatten()
        record: dict[str, Any] = {"round": r + 1, "cohort": int(sampled.numel())}
        updates = None
        if sampled.numel():
            updates, losses = local_updates(objective, params, ex, rows[sampled],
                                            counts[sampled], epochs=train.local_epochs,
                                            batch_size=train.batch_size, lr=train.lr,
                                            optimizer=lm.optimizer, generator=local_gen)
            if not private:  # raw client statistics of a DP run are not accounted: keep them out
                record["client_loss"] = float(losses.mean())
        if private:
            clipped = clip_updates(updates, privacy.clip)[0] if updates is not None else None
            step, _ = dp_fedavg(clipped, params, clip=privacy.clip, noise_multiplier=z,
                                expected_cohort=train.cohort, generator=noise_gen)
        elif updates is not None:
            step = fedavg_mean(updates)
            record["update_norm"] = float(update_norms(updates).mean())
        else:
            step = None
        if step is not None:  # the mean update is a descent direction: its negative is the gradient
            server.step(params, {name: -s for name, s in step.items()})
        history.append(record)
        if on_round is not None:
            on_round(r + 1, train.rounds)
    return params, _claim(z, q, train, privacy, "client"), history


def local_updates(objective: Objective, params: Params, ex: Examples, rows: torch.Tensor,
                  counts: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
                  optimizer: str, generator: torch.Generator) -> tuple[Params, torch.Tensor]:
    """Local minibatch training (SGD or Adam, fresh state per round) on K clients at once (vmap
    over clients); returns the updates (K, ...) and each client's mean training loss.

    rows: (K, n_max) example indices per client, padded; counts: (K,) real example counts. Steps
    past a client's last example have zero weight and leave its parameters unchanged.
    """
    k, n_max = rows.shape
    stacked = {name: p.unsqueeze(0).expand(k, *p.shape).clone() for name, p in params.items()}
    start = {name: p.clone() for name, p in stacked.items()}
    arange_k = torch.arange(k).unsqueeze(1)
    valid = torch.arange(n_max).unsqueeze(0) < counts.unsqueeze(1)
    opt = RowOptimizer(optimizer, stacked, lr, rows=k)

    def batch_loss(p: Params, ids: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor,
                   wb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = (objective.losses(p, ids, weights, labels) * wb).sum()
        return total / wb.sum().clamp(min=1.0), total

    step = vmap(grad(batch_loss, has_aux=True))
    loss_sum, seen = torch.zeros(k), torch.zeros(k)
    for _ in range(epochs):
        order = torch.rand(k, n_max, generator=generator).masked_fill(~valid, 2.0).argsort(dim=1)
        for s in range(math.ceil(n_max / batch_size)):
            pos = torch.arange(s * batch_size, min((s + 1) * batch_size, n_max))
            wb = (pos.unsqueeze(0) < counts.unsqueeze(1)).float()
            chosen = rows[arange_k, order[:, pos]]
            grads, total = step(stacked, ex.ids[chosen], ex.weights[chosen], ex.labels[chosen],
                                wb)
            opt.step(stacked, grads, active=wb.sum(dim=1) > 0)
            loss_sum += total.detach()
            seen += wb.sum(dim=1)
    updates = {name: stacked[name] - start[name] for name in stacked}
    return updates, loss_sum / seen.clamp(min=1.0)


def _client_rows(clients: torch.Tensor, n_clients: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_clients, n_max) example indices of each client, padded with its first index."""
    lists = [torch.nonzero(clients == c).flatten() for c in range(n_clients)]
    counts = torch.tensor([len(x) for x in lists])
    n_max = max(1, int(counts.max()))
    rows = torch.zeros((n_clients, n_max), dtype=torch.long)
    for c, x in enumerate(lists):
        if len(x):
            rows[c, : len(x)] = x
            rows[c, len(x):] = x[0]
    return rows, counts


class RowOptimizer:
    """SGD or Adam on a dict of tensors whose first dimension may be independent rows (clients).

    `active` (rows,) freezes the rows that take no step this time: their parameters and moments
    stay as they are, as if the step never happened (a client past its last example).
    """

    def __init__(self, kind: str, params: Params, lr: float, rows: int | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.kind, self.lr, self.betas, self.eps = kind, lr, betas, eps
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()}
        self.t = torch.zeros(rows if rows is not None else ())

    def step(self, params: Params, grads: Params, active: torch.Tensor | None = None) -> None:
        """Update `params` in place with `grads`."""
        on = torch.ones_like(self.t) if active is None else active.float()
        self.t += on
        b1, b2 = self.betas
        for name, p in params.items():
            shape = (-1, *([1] * (p.dim() - 1))) if self.t.dim() else ()
            mask = on.view(shape)
            g = grads[name]
            if self.kind == "sgd":
                p -= mask * self.lr * g
                continue
            self.m[name] = torch.lerp(self.m[name], self.m[name] * b1 + (1 - b1) * g, mask)
            self.v[name] = torch.lerp(self.v[name], self.v[name] * b2 + (1 - b2) * g * g, mask)
            t = self.t.clamp(min=1).view(shape)
            step = (self.m[name] / (1 - b1**t)) / ((self.v[name] / (1 - b2**t)).sqrt() + self.eps)
            p -= mask * self.lr * step


def _claim(z: float, q: float, train: TrainSpec, privacy: PrivacySpec,
           unit: Literal["client", "example"]) -> Claim:
    """The Claim of `train.rounds` Poisson-sampled Gaussian steps with central noise."""
    return claim_for_poisson_gaussian(
        noise_multiplier=z, sampling_rate=q, steps=train.rounds, delta=privacy.delta,
        target_epsilon=privacy.epsilon, clip=privacy.clip, unit=unit,
        neighbouring=privacy.neighbouring, guarantee_against=CENTRAL_DP_OBSERVERS)
