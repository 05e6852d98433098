"""One round of the federated loop, between sampling and the server step: the plan's mechanism
trains the cohort (with any client-side clipping and noise), the server screens what arrives and
aggregates it; and the server view a recorded round keeps for the inversion attacks (starting model,
received updates, aggregated sum)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch

from privbench.models.adapter import ModelAdapter, Params
from privbench.spec.schema import TrainSpec
from privbench.trainers.client_data import ClientData
from privbench.trainers.dpsgd import GradientCanaries
from privbench.trainers.mechanisms.base import PLAIN_SUM, ClientRound, ServerRound
from privbench.trainers.mechanisms.base import ClientUpdateHook as ClientUpdateHook
from privbench.trainers.mechanisms.secure_aggregation import SecureSum
from privbench.trainers.privacy_plan import PrivacyPlan
from privbench.trainers.screening import screen_updates
from privbench.trainers.secagg.trainer_hook import SecureRounds

if TYPE_CHECKING:  # [governance] hook type only (it imports the trainers package)
    from privbench.governance.personal import PersonalHook

class TamperHook(Protocol):
    """A test's malicious clients: called with (round number, the cohort's client ids, the updates
    they honestly send (K, ...)), it returns {row: the update that row sends instead}."""

    def __call__(self, round_no: int, clients: list[int],
                 honest: dict[str, torch.Tensor]) -> dict[int, Any]: ...


def run_round(adapter: ModelAdapter, plan: PrivacyPlan, params: Params, data: ClientData,
              sampled: torch.Tensor, clients: list[int], train: TrainSpec, clip: float,
              gens: dict[str, torch.Generator], r: int, record: dict[str, Any],
              tamper: TamperHook | None, secure: SecureRounds | None = None,
              client_update_hook: ClientUpdateHook | None = None,
              view: dict[str, Any] | None = None,
              gradient_canaries: GradientCanaries | None = None, *,
              optimizer: str = "sgd", engine: str = "auto", vectorised: bool = True,
              microbatch: int | None = None, personal: PersonalHook | None = None
              ) -> tuple[Params | None, float]:
    """Train the cohort, screen and aggregate; returns (server step or None, next round's clip).

    The plan's mechanism (trainers/mechanisms/) does the clients' side (training and any
    client-side clipping and noise) and the server's (clipping, noise, mean); the loop only
    carries the updates between them and screens what arrives.

    Args:
        adapter, plan, params, data: the model, the privacy plan, the global model, the clients.
        sampled, clients: the cohort's rows of `data` and their client ids.
        train, clip, gens, r, record: the train spec, this round's C, the streams, the round
            (0-based) and its record (rejections are added).
        tamper, secure, client_update_hook, view, gradient_canaries: the optional hooks.
        optimizer, engine, vectorised, microbatch, personal: how clients train locally.
    """
    mechanism = plan.mechanism
    z = mechanism.noise_multiplier(r)
    template = params if personal is None else personal.shared(params)  # what clients send
    sent = None
    if sampled.numel() > 0:
        sent = mechanism.client_updates(ClientRound(
            adapter, params, data, sampled, train, r, clip, z, gens, record,
            local_steps=plan.local_steps, record_rate=plan.record_rate,
            hook=client_update_hook, gradient_canaries=gradient_canaries, personal=personal,
            optimizer=optimizer, engine=engine, vectorised=vectorised, microbatch=microbatch))
    received, kept = None, []
    if sent is not None:
        replaced = tamper(r + 1, clients, sent) if tamper is not None else None
        received, kept, rejections = screen_updates(sent, clients, template,
                                                    max_norm=train.max_update_norm,
                                                    round_no=r + 1, replaced=replaced)
        if rejections:
            record["rejected"] = rejections
    out = mechanism.aggregate(ServerRound(
        received, template, [clients[k] for k in kept] if received is not None else [], r, clip,
        z, train.cohort, gens, record, view, PLAIN_SUM if secure is None else SecureSum(secure)))
    return out.step, out.next_clip


def record_round(recorded: dict[str, dict], round_no: int, params: dict[str, torch.Tensor],
                  view: dict[str, Any], per_client: bool) -> None:
    """Keep one round's starting model, the per-client updates as the server received them
    (client id -> update; only without secure aggregation), the sum it aggregated (before any
    noise the server itself adds) and which clients that sum holds.

    Args:
        recorded: the trainer's recorded rounds (changed in place); round_no: the round (1-based);
        params: the global model the round started from; view: what the server saw ("seen",
            "clients", "total"); per_client: whether it sees each client's update (no secure
            aggregation).
    """
    recorded["round_params"][round_no] = {name: p.clone() for name, p in params.items()}
    seen = view.get("seen")
    if per_client and seen is not None:
        recorded["client_updates"][round_no] = {
            c: {name: u[i].clone() for name, u in seen.items()}
            for i, c in enumerate(view["clients"])}
    if view.get("total") is not None:
        recorded["aggregates"][round_no] = {name: t.clone() for name, t in view["total"].items()}
        recorded["cohorts"][round_no] = list(view["clients"])
