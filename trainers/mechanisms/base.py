"""The interface every DP mechanism of the federated loop implements, and what it is handed.

Contract (in the manner of dp_accounting's dp_event.py, which says what each event means):

- A `Mechanism` is one round's privacy-relevant computation, split where the trust boundary is:
  `client_updates` is everything a sampled client does before its update leaves the device
  (local training, and for the per-client mechanisms the clipping and the noise);
  `aggregate` is everything the server does with what it received (for central mechanisms the
  clipping, the sum, the noise and the division by the expected cohort). Nothing else in the
  loop clips, noises or averages updates; screening and rollback only drop or restore them.
- Randomness comes only from the round's named generators (`gens`: "local" for sampling and
  minibatches, "noise" for every Gaussian draw, "clip" for the adaptive clip's count), drawn in
  a fixed order, so a seed replays a run bit for bit and resumes to identical weights.
- The noise a round adds is `noise_multiplier` in the round object (relative to the clip),
  which the trainer takes from the outermost mechanism (`Mechanism.noise_multiplier(r)`), so a
  wrapper that changes the noise (adaptive clipping, a schedule) changes what runs.
- `accounted_z(r)` is the Gaussian noise multiplier the accountant composes for round r; the
  PrivacyPlan (trainers/privacy_plan.py) reads it to build the ledger's DP events, so what is
  accounted is what the mechanism says it runs.
- A wrapper (`Wrapper`) holds an inner mechanism and forwards what it does not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from privbench.models.adapter import ModelAdapter, Params
from privbench.spec.schema import TrainSpec
from privbench.trainers.aggregation import fedavg_mean
from privbench.trainers.client_data import ClientData
from privbench.trainers.client_update import local_sgd

if TYPE_CHECKING:
    from privbench.governance.personal import PersonalHook
    from privbench.trainers.dpsgd import GradientCanaries

class ClientUpdateHook(Protocol):
    """The audit's optional hook on the clients' updates (privbench.audit.canaries).

    Called with (round index, sampled client ids, their updates (K, ...)) before clipping and
    noise, it returns the updates, where it may have replaced canary clients' updates; None
    changes nothing. A hook may also have a method `canary_mask(sampled) -> (K,) bool tensor`
    marking the sampled clients whose updates it replaces: those clients are then not trained,
    and their rows reach the hook as zeros, in tensors the trainer built for the round, which
    the hook may write in place. A hook without it gets every sampled client's trained update.
    """

    def __call__(self, r: int, sampled: torch.Tensor,
                 updates: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


@dataclass
class ClientRound:
    """The client side of one round as the trainer hands it to a mechanism.

    Attributes:
        adapter, params: the model and the round's starting parameters (shared, or with
            `batched` one per row, each (K, ...): independent runs side by side).
        data, rows: every client's records and the rows of the K clients sampled this round.
        train: the local plan (epochs, batch size, learning rate).
        r: the round index (0-based); clip, noise_multiplier: C and z of this round.
        gens: the run's random streams; record: the round's history record (None: not kept).
        local_steps, record_rate: example-level DP-SGD's steps and Poisson record rate.
        hook, gradient_canaries: the audit's canary clients or Dirac records (rows: clients).
        personal: [governance] FedPer personal layers (never sent); optimizer, engine,
        vectorised, microbatch: how the clients train (trainers/client_update.py, dpsgd.py).
    """

    adapter: ModelAdapter
    params: Params
    data: ClientData
    rows: torch.Tensor
    train: TrainSpec
    r: int
    clip: float
    noise_multiplier: float
    gens: dict[str, torch.Generator]
    record: dict[str, Any] | None = None
    batched: bool = False
    local_steps: int = 0
    record_rate: float = 1.0
    hook: ClientUpdateHook | None = None
    gradient_canaries: GradientCanaries | None = None
    personal: PersonalHook | None = None
    optimizer: str = "sgd"
    engine: str = "auto"
    vectorised: bool = True
    microbatch: int | None = None


class Aggregator(Protocol):
    """How the server obtains the sum of the cohort's (clipped) updates: in the clear, or under
    secure aggregation (trainers/mechanisms/secure_aggregation.py)."""

    secure: bool  # the server sees only the sum, never a client's update

    def sum(self, clipped: Params | None, r: int, record: dict[str, Any] | None,
            noise_multiplier: float) -> tuple[Params | None, float]:
        """(the clipped updates, or their sum as a batch of one; the noise the server adds)."""
        ...

    def mean(self, updates: Params, clip: float, r: int,
             record: dict[str, Any] | None) -> Params:
        """The mean of the received updates (no server noise)."""
        ...


class PlainSum:
    """The server sees every update: it sums them itself and adds the noise asked for."""

    secure = False

    def sum(self, clipped: Params | None, r: int, record: dict[str, Any] | None,
            noise_multiplier: float) -> tuple[Params | None, float]:
        return clipped, noise_multiplier

    def mean(self, updates: Params, clip: float, r: int,
             record: dict[str, Any] | None) -> Params:
        return fedavg_mean(updates)


PLAIN_SUM = PlainSum()


@dataclass
class ServerRound:
    """The server side of one round as the trainer hands it to a mechanism.

    Attributes:
        received: the screened updates (K, ...) of the clients in `clients`, or None when no
            update arrived (an empty cohort still gets central noise).
        template: the shapes of an update (the shared parameters).
        clients: the client ids of the rows of `received`.
        r, clip, noise_multiplier: the round index, C and z of this round.
        expected_cohort: the public expected cohort the central mean divides by.
        gens: the run's random streams; record: the round's history record (None: not kept).
        view: the server's view of the round, filled for the inversion attacks (None: not
            recorded): clients, the per-client updates it saw ("seen") and their sum ("total").
        aggregator: how the sum is formed (PLAIN_SUM, or secure aggregation).
    """

    received: Params | None
    template: Params
    clients: list[int]
    r: int
    clip: float
    noise_multiplier: float
    expected_cohort: float
    gens: dict[str, torch.Generator]
    record: dict[str, Any] | None = None
    view: dict[str, Any] | None = None
    aggregator: Aggregator = PLAIN_SUM


@dataclass
class Aggregated:
    """What a round's aggregation gives the trainer: the server step (the mean update; None:
    nothing to apply), the next round's clip and the norms of the received updates (central)."""

    step: Params | None
    next_clip: float
    norms: torch.Tensor = field(default_factory=lambda: torch.zeros(0))


def total(updates: Params) -> Params:
    """The sum over the rows of each tensor."""
    return {n: u.sum(dim=0) for n, u in updates.items()}


class Mechanism:
    """A base DP mechanism at calibrated noise multiplier `z` (see the module's contract).

    Subclasses set `name` (their registry name) and override `client_updates` (client-side
    privatisation) and/or `aggregate` (server-side privatisation).
    """

    name: ClassVar[str] = ""
    uses_per_example_engine: ClassVar[bool] = False  # DP-SGD inside the clients

    def __init__(self, z: float = 0.0) -> None:
        self.z = z

    def accounted_z(self, r: int) -> float:
        """The accounted noise multiplier of round r (0-based)."""
        return self.z

    def noise_multiplier(self, r: int) -> float:
        """The noise added in round r, relative to the clip."""
        return self.accounted_z(r)

    def client_updates(self, job: ClientRound) -> Params:
        """What the K sampled clients send (K, ...): local training, then the audit's hook."""
        sent, _ = train_clients(job)
        return apply_hook(job, sent)

    def aggregate(self, server: ServerRound) -> Aggregated:
        """The mean of the received updates (the noise, if any, was added by the clients)."""
        if server.received is None:
            return Aggregated(None, server.clip)
        self.observe(server, server.received)
        return Aggregated(server.aggregator.mean(server.received, server.clip, server.r,
                                                 server.record), server.clip)

    def observe(self, server: ServerRound, seen: Params) -> None:
        """Fill the server's view of the round (inversion attacks) with the updates it holds."""
        if server.view is not None:
            server.view.update(clients=server.clients, seen=seen, total=total(seen))

    def describe(self) -> str:
        """The mechanism stack, outermost first ("adaptive_clip(central)")."""
        return self.name


class Wrapper(Mechanism):
    """A mechanism around another (Flower's DP strategy wrappers): forwards what it does not
    change."""

    def __init__(self, inner: Mechanism) -> None:
        super().__init__(inner.z)
        self.inner = inner

    @property
    def uses_per_example_engine(self) -> bool:  # type: ignore[override]
        return self.inner.uses_per_example_engine

    def accounted_z(self, r: int) -> float:
        return self.inner.accounted_z(r)

    def noise_multiplier(self, r: int) -> float:
        return self.inner.noise_multiplier(r)

    def client_updates(self, job: ClientRound) -> Params:
        return self.inner.client_updates(job)

    def aggregate(self, server: ServerRound) -> Aggregated:
        return self.inner.aggregate(server)

    def describe(self) -> str:
        return f"{self.name}({self.inner.describe()})"


def apply_hook(job: ClientRound, sent: Params) -> Params:
    """The audit's canary clients replace their rows (see ClientUpdateHook); None: unchanged."""
    return sent if job.hook is None else job.hook(job.r, job.rows, sent)


def train_clients(job: ClientRound) -> tuple[Params, torch.Tensor]:
    """Local SGD on the sampled clients whose updates the audit's hook keeps.

    Returns:
        The updates (K, ...), zero in the rows of clients the hook replaces (not trained), and
        the trained clients' losses.
    """
    t, sampled = job.train, job.rows
    mask_of = getattr(job.hook, "canary_mask", None)
    replaced = mask_of(sampled) if mask_of is not None else None

    def sgd(params: Params, rows: torch.Tensor, batched: bool) -> tuple[Params, torch.Tensor]:
        canaries = job.gradient_canaries  # Dirac records of an audit without DP
        return local_sgd(job.adapter, params, job.data.rows(rows), epochs=t.local_epochs,
                         batch_size=t.batch_size, lr=t.lr, generator=job.gens["local"],
                         optimizer=job.optimizer, vectorised=job.vectorised,
                         batched_params=batched,
                         canaries=None if canaries is None else canaries.rows(rows))

    if job.personal is not None:  # [governance] own personal layers in, only shared ones out
        sent, losses = sgd(job.personal.start(job.params, sampled), sampled, True)
        return job.personal.keep(sampled, sent), losses
    if replaced is None or not bool(replaced.any()):
        return sgd(job.params, sampled, job.batched)
    shape = (lambda p: p.shape[1:]) if job.batched else (lambda p: p.shape)
    sent = {name: torch.zeros((sampled.numel(), *shape(p)), dtype=p.dtype)
            for name, p in job.params.items()}
    kept = torch.nonzero(~replaced).flatten()  # positions of the clients trained
    if not len(kept):
        return sent, torch.zeros(0)
    start = ({n: p.index_select(0, kept) for n, p in job.params.items()} if job.batched
             else job.params)
    trained, losses = sgd(start, sampled.index_select(0, kept), job.batched)
    for name, u in trained.items():
        sent[name].index_copy_(0, kept, u)
    return sent, losses
