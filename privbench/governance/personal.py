"""[governance] Personalisation at the edge: personal layers kept on each client.

Two ways, over the model adapter's parameters split into shared and personal ones
(`personal.layers` names the personal ones by prefix):

- **FedPer** (Arivazhagan et al. 2019; `personal.mode = "fedper"`): every client keeps its own
  copy of the personal layers in a per-client store. Each round a sampled client trains the
  shared layers from the global model and its personal layers from its stored copy; it sends
  only the shared part of its update (which alone is clipped, noised and aggregated) and keeps
  the personal part. The global model's personal layers never change: they are what a client new
  to the federation starts from.
- **Fine-tuned personal heads** (`personal.mode = "finetune"`, or `finetune_epochs` after FedPer):
  after training, each client fine-tunes its copy of the personal layers on its own records,
  the shared layers frozen at the global model's.

The DP claim covers what leaves the clients (the shared layers' updates, hence the released
global model). The personal layers are trained on a client's records without noise and never
leave it: their leakage, to whoever queries a client's personalised model, is not covered by the
global claim (the card and the report say so), and the personal scorer measures it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch

from privbench.models.adapter import Batch, ModelAdapter, Params
from privbench.rng import generator

if TYPE_CHECKING:
    from privbench.trainers.client_data import ClientData

NOT_COVERED = ("personal layers are trained on each client's records without DP noise and "
               "never leave the client: the global claim covers the shared layers and the "
               "released global model only, not a client's personalised model")


class PersonalHook(Protocol):
    """The trainer's personal-layers hook (train_fedavg's `personal`)."""

    def shared(self, params: Params) -> Params:
        """`params` without the personal layers (what is sent, screened and aggregated)."""
        ...

    def start(self, params: Params, rows: torch.Tensor) -> Params:
        """Clients `rows`' starting parameters, stacked (K, ...).

        Args:
            params: the global parameters; rows: the sampled clients' indices (K,).
        """
        ...

    def keep(self, rows: torch.Tensor, updates: Params) -> Params:
        """Keep the personal part of clients `rows`' updates; return the shared part.

        Args:
            rows: the clients' indices (K,); updates: their updates, stacked (K, ...).
        """
        ...


class PersonalLayers:
    """A per-client store of the personal layers, and the shared/personal split of updates.

    Args:
        names: the personal parameters' names (in model order).
        init: the model's initial parameters (every client's personal copy starts from them).
        n_clients: rows of the client data.
        mode: "fedper" (kept through training) or "finetune" (only fine-tuned after it).
    """

    def __init__(self, names: list[str], init: Params, n_clients: int,
                 mode: str = "fedper") -> None:
        self.names = list(names)
        self.mode = mode
        self.store: Params = {n: init[n].detach().clone().unsqueeze(0).repeat(
            n_clients, *[1] * init[n].dim()) for n in self.names}
        self.rounds_kept = torch.zeros(n_clients, dtype=torch.long)  # rounds each client trained

    def shared(self, params: Params) -> Params:
        """`params` without the personal layers: what a client sends and the server sees."""
        return {n: p for n, p in params.items() if n not in self.store}

    def start(self, params: Params, rows: torch.Tensor) -> Params:
        """The starting point of clients `rows` (K,): the global shared layers and each
        client's own personal layers, stacked (K, ...) in the model's parameter order.

        Args:
            params: the global parameters; rows: the clients' indices.
        """
        k = rows.numel()
        return {n: (self.store[n][rows].clone() if n in self.store
                    else p.detach().unsqueeze(0).expand(k, *p.shape).clone())
                for n, p in params.items()}

    def keep(self, rows: torch.Tensor, updates: Params) -> Params:
        """Apply the personal part of clients `rows`' updates to their store; return the shared
        part, the only one sent.

        Args:
            rows: the clients' indices (K,); updates: their updates, stacked (K, ...).
        """
        for n in self.names:
            self.store[n][rows] += updates[n]
        self.rounds_kept[rows] += 1
        return self.shared(updates)

    def models(self, global_params: Params, rows: torch.Tensor) -> Params:
        """Clients `rows`' personalised models: the global shared layers with their own
        personal layers, stacked (K, ...).

        Args:
            global_params: the global model; rows: the clients' indices (K,).
        """
        return self.start(global_params, rows)

    def finetune(self, adapter: ModelAdapter, global_params: Params, data: ClientData, *,
                 epochs: int, batch_size: int, lr: float, seed: int) -> None:
        """Fine-tune every client's personal layers on its own records for `epochs` local
        epochs (the shared layers frozen at the global model's), one vmapped call.

        In "finetune" mode each client's copy starts from the global model's personal layers.

        Args:
            adapter: the model; global_params: the global model (its shared layers stay frozen);
            data: every client's records; epochs, batch_size, lr, seed: the local plan and its seed.
        """
        from privbench.trainers.client_update import local_sgd

        rows = torch.arange(data.n_clients)
        if self.mode == "finetune":
            for n in self.names:
                self.store[n] = global_params[n].detach().unsqueeze(0).repeat(
                    data.n_clients, *[1] * global_params[n].dim())
        frozen = self.shared(global_params)
        start = {n: self.store[n].clone() for n in self.names}
        updates, _ = local_sgd(_Frozen(adapter, frozen), start, data, epochs=epochs,
                               batch_size=batch_size, lr=lr,
                               generator=generator(seed, 17),
                               batched_params=True)
        for n in self.names:
            self.store[n][rows] += updates[n]

    def card(self) -> dict[str, Any]:
        """The privacy card's `personal_layers` section."""
        return {"mode": self.mode, "layers": self.names, "sent_or_aggregated": False,
                "covered_by_claim": False, "note": NOT_COVERED}


class _Frozen:
    """An adapter whose trainable parameters are only the personal layers: the shared ones are
    fixed (`frozen`) and merged in for every call."""

    def __init__(self, adapter: ModelAdapter, frozen: Params) -> None:
        self.inner, self.frozen = adapter, frozen
        self.module = adapter.module

    def init_params(self) -> Params:
        return {n: p for n, p in self.inner.init_params().items() if n not in self.frozen}

    def per_example_loss(self, params: Params, batch: Batch) -> torch.Tensor:
        return self.inner.per_example_loss({**self.frozen, **params}, batch)

    def outputs(self, params: Params, batch: Batch) -> torch.Tensor:
        return self.inner.outputs({**self.frozen, **params}, batch)

    def release(self, params: Params) -> torch.nn.Module:
        return self.inner.release({**self.frozen, **params})
