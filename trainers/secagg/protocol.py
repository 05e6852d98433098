"""Secure aggregation (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020) as client and server
objects that exchange explicit messages (secagg/messages.py), so every byte a party holds or sends
can be inspected. Here: the server, dropouts, and `run_secure_sum`, which runs one round between
the server and its clients (secagg/client.py) on the agreed setup (secagg/setup.py).

Threat model: an honest-but-curious server and honest-but-curious clients (no signatures or
consistency round, so an actively lying server is out of scope). The server learns the sum of
the masked inputs of the clients that finished the masking step and nothing else; if too few
clients remain to unmask, the round aborts before any secret is reconstructed.

Rounds: (0) advertise two X25519 public keys; (1) Shamir-share the mask key and a fresh self-mask
seed among the neighbours, each share sealed with ChaCha20-Poly1305 under the pairwise agreed key;
(2) upload x + PRG(b_u) + sum_v +-PRG(s_uv) mod 2^m; (3) unmask: each live client returns, per
neighbour, the share of the self-mask seed (if that neighbour's input arrived) or of its mask key
(if it dropped after the keys were shared), never both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from privbench.trainers.secagg import crypto, shamir
from privbench.trainers.secagg.client import SecAggClient, pairwise_mask
from privbench.trainers.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    SharedKeys,
    UnmaskShares,
)
from privbench.trainers.secagg.packing import unpack
from privbench.trainers.secagg.setup import (
    SecAggAbort,
    SecAggConfig,
    neighbour_graph,
    threshold_for,
)

# ---------------------------------------------------------------------------------------------
# Messages (what goes over the wire; `wire_bytes` is the serialised size)


# ---------------------------------------------------------------------------------------------
# Client


# ---------------------------------------------------------------------------------------------
# Server


@dataclass
class SecAggServer:
    """The aggregator: routes messages and reconstructs only what the protocol allows."""

    config: SecAggConfig
    ids: list[int]
    graph: dict[int, list[int]] = field(default_factory=dict)
    public_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    ciphertexts: dict[int, dict[int, bytes]] = field(default_factory=dict)  # sender -> rcpt -> ct
    masked: dict[int, np.ndarray] = field(default_factory=dict)
    seed_shares: dict[int, dict[int, bytes]] = field(default_factory=dict)  # owner->holder->share
    key_shares: dict[int, dict[int, bytes]] = field(default_factory=dict)
    downloaded: int = 0

    def __post_init__(self) -> None:
        self.graph = neighbour_graph(sorted(self.ids), self.config.neighbours,
                                     self.config.graph_seed)

    def rosters(self, adverts: list[AdvertiseKeys]) -> dict[int, dict[int, tuple[bytes, bytes]]]:
        """Round 0 -> 1: each live client gets the public keys of its live neighbours."""
        for m in adverts:
            self.public_keys[m.sender] = (m.cipher_public, m.mask_public)
            self.downloaded += m.wire_bytes
        self._require(len(self.public_keys), "advertised keys")
        live = set(self.public_keys)
        out = {}
        for u in self.public_keys:
            roster = {v: self.public_keys[v] for v in self.graph[u] if v in live}
            if len(roster) < 2:
                raise SecAggAbort(
                    f"secure aggregation aborted: client {u} has {len(roster)} live neighbours "
                    "but 2 are needed to share its secrets; nothing was reconstructed and no "
                    "sum or input is revealed")
            out[u] = roster
        return out

    def route(self, shared: list[SharedKeys]) -> dict[int, dict[int, bytes]]:
        """Round 1 -> 2: forward each sealed share to its holder (U1 = senders)."""
        for m in shared:
            self.ciphertexts[m.sender] = dict(m.sealed)
            self.downloaded += m.wire_bytes
        self._require(len(self.ciphertexts), "shared keys")
        inboxes: dict[int, dict[int, bytes]] = {u: {} for u in self.ciphertexts}
        for sender, sealed in self.ciphertexts.items():
            for rcpt, ct in sealed.items():
                if rcpt in inboxes:
                    inboxes[rcpt][sender] = ct
        return inboxes

    def collect(self, inputs: list[MaskedInput]) -> tuple[set[int], set[int]]:
        """Round 2 -> 3: keep masked inputs (U2); say who survived and who dropped after U1."""
        for m in inputs:
            self.masked[m.sender] = unpack(m.payload, self.config.modulus_bits, self.config.length)
            self.downloaded += m.wire_bytes
        self._require(len(self.masked), "masked inputs")
        survivors = set(self.masked)
        return survivors, set(self.ciphertexts) - survivors

    def finish(self, responses: list[UnmaskShares]) -> np.ndarray:
        """Round 3: check every needed secret is recoverable, then unmask the sum (uint32)."""
        for m in responses:
            self.downloaded += m.wire_bytes
            for owner, share in m.seed_shares.items():
                self.seed_shares.setdefault(owner, {})[m.sender] = share
            for owner, share in m.key_shares.items():
                self.key_shares.setdefault(owner, {})[m.sender] = share
        survivors = set(self.masked)
        dropped = set(self.ciphertexts) - survivors
        self._require(len(responses), "unmasking answers")
        needs = [(u, self.seed_shares, "self-mask seed") for u in sorted(survivors)]
        needs += [(v, self.key_shares, "mask key") for v in sorted(dropped)]
        for owner, table, what in needs:
            t = threshold_for(self.config, len(self.ciphertexts[owner]))
            have = len(table.get(owner, {}))
            if have < t:
                raise SecAggAbort(
                    f"secure aggregation aborted: {have} shares of client {owner}'s {what} "
                    f"arrived but {t} are needed (too many dropouts); nothing was reconstructed "
                    "and no sum or input is revealed")
        total = np.zeros(self.config.length, dtype=np.uint32)
        for y in self.masked.values():
            total += y
        for u in sorted(survivors):
            t = threshold_for(self.config, len(self.ciphertexts[u]))
            seed = shamir.combine(self.seed_shares[u], t)
            total -= crypto.prg_uint32(seed, self.config.length)
        for v in sorted(dropped):
            t = threshold_for(self.config, len(self.ciphertexts[v]))
            key = crypto.private_from_bytes(shamir.combine(self.key_shares[v], t))
            for u in sorted(survivors):
                if v not in self.ciphertexts[u]:
                    continue  # u never masked with v
                mask = pairwise_mask(key, self.public_keys[u][1], self.config)
                # u added +mask when u < v, -mask when u > v: undo it
                if u < v:
                    total -= mask
                else:
                    total += mask
        return total & self.config.modulus_mask

    def _require(self, count: int, stage: str) -> None:
        t = max(2, math.ceil(self.config.threshold_fraction * len(self.ids)))
        if count < t:
            raise SecAggAbort(
                f"secure aggregation aborted at {stage}: {count} clients remain but {t} are "
                "needed (too many dropouts); nothing was reconstructed and no sum or input is "
                "revealed")


# ---------------------------------------------------------------------------------------------
# A whole round, with simulated dropouts


@dataclass(frozen=True)
class Dropouts:
    """Clients that go silent at each stage of the round."""

    after_keys: frozenset[int] = frozenset()  # advertised keys, never shared them
    after_shares: frozenset[int] = frozenset()  # shared keys (others mask with them), no input
    after_input: frozenset[int] = frozenset()  # sent the masked input, never helped unmask


@dataclass
class SecureSum:
    """The result of one round: the sum mod 2^m, whose inputs it holds, and traffic per client."""

    total: np.ndarray
    contributors: list[int]
    uploaded: dict[int, int]
    downloaded: dict[int, int]
    server: SecAggServer


def run_secure_sum(inputs: dict[int, np.ndarray], config: SecAggConfig,
                   dropouts: Dropouts | None = None) -> SecureSum:
    """Run every step of the protocol among `inputs`' clients; raise SecAggAbort on failure.

    Args:
        inputs: client id -> its ring-encoded input (length,) uint32; config: the round;
        dropouts: who goes silent at each stage (None: nobody).
    Returns:
        The SecureSum: total, contributors, bytes each client sent and received.
    """
    drop = dropouts or Dropouts()
    clients = {u: SecAggClient(u, config, x) for u, x in inputs.items()}
    server = SecAggServer(config, sorted(clients))
    rosters = server.rosters([c.advertise() for c in clients.values()])
    live = [u for u in rosters if u not in drop.after_keys]
    inboxes = server.route([clients[u].share_keys(rosters[u]) for u in live])
    live = [u for u in inboxes if u not in drop.after_shares]
    survivors, dropped = server.collect([clients[u].masked_input(inboxes[u]) for u in live])
    answering = [u for u in sorted(survivors) if u not in drop.after_input]
    total = server.finish([clients[u].unmask(survivors, dropped) for u in answering])
    return SecureSum(total=total, contributors=sorted(survivors),
                     uploaded={u: c.uploaded for u, c in clients.items()},
                     downloaded={u: c.downloaded for u, c in clients.items()}, server=server)
