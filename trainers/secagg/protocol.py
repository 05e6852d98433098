"""Secure aggregation (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020) as client and server
objects that exchange explicit messages, so every byte a party holds or sends can be inspected.

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

from privbench.errors import PrivbenchError
from privbench.trainers.secagg import crypto, shamir
from privbench.trainers.secagg.packing import pack, unpack

ID_BYTES = 4


class SecAggAbort(PrivbenchError):
    """The round could not complete securely (too many dropouts); no sum and no input revealed."""


@dataclass(frozen=True)
class SecAggConfig:
    """Public parameters of one secure-aggregation round."""

    length: int  # entries of each input vector
    threshold_fraction: float = 0.6  # t = ceil(fraction * neighbourhood size), at least 2
    neighbours: int = 0  # 0: complete graph (SecAgg); k > 0: k-regular graph (SecAgg+)
    modulus_bits: int = 32  # inputs and sum live in Z / 2^m
    round_tag: bytes = b"round-0"  # binds keys and ciphertexts to this round
    graph_seed: int = 0  # public randomness for the SecAgg+ neighbour graph

    @property
    def modulus_mask(self) -> np.uint32:
        return np.uint32((1 << self.modulus_bits) - 1)


def neighbour_graph(ids: list[int], k: int, seed: int) -> dict[int, list[int]]:
    """Each client's neighbours: everyone (k = 0 or k >= n - 1) or a random k-regular Harary graph.

    SecAgg+ (Bell et al. 2020): clients sit on a ring in a public random order and pair with the
    k/2 nearest on each side, so the graph is k-regular and every client's cost is O(k).
    """
    n = len(ids)
    if k <= 0 or k >= n - 1:
        return {u: [v for v in ids if v != u] for u in ids}
    if k % 2:
        k += 1
    order = [ids[i] for i in np.random.default_rng(seed).permutation(n)]
    pos = {u: i for i, u in enumerate(order)}
    return {u: sorted({order[(pos[u] + s) % n] for s in range(-k // 2, k // 2 + 1) if s})
            for u in ids}


def secagg_plus_degree(n: int) -> int:
    """A SecAgg+ neighbourhood size growing as log n: the smallest even k >= 3 log2 n (< n).

    Bell et al. (2020) show k = O(log n) suffices; the constant 3 is this package's choice, not
    their security parameterisation, so pick k from their bounds for a real deployment.
    """
    k = math.ceil(3 * math.log2(max(n, 2)))
    return min(n - 1, k + (k % 2))


def threshold_for(config: SecAggConfig, degree: int) -> int:
    """Shares needed to reconstruct one client's secrets, given its neighbourhood size."""
    return min(degree, max(2, math.ceil(config.threshold_fraction * degree)))


# ---------------------------------------------------------------------------------------------
# Messages (what goes over the wire; `wire_bytes` is the serialised size)


@dataclass(frozen=True)
class AdvertiseKeys:
    sender: int
    cipher_public: bytes
    mask_public: bytes

    @property
    def wire_bytes(self) -> int:
        return ID_BYTES + len(self.cipher_public) + len(self.mask_public)


@dataclass(frozen=True)
class SharedKeys:
    sender: int
    sealed: dict[int, bytes]  # recipient -> AEAD(ids || share of mask key || share of seed)

    @property
    def wire_bytes(self) -> int:
        return ID_BYTES + sum(ID_BYTES + len(c) for c in self.sealed.values())


@dataclass(frozen=True)
class MaskedInput:
    sender: int
    payload: bytes  # the masked vector, packed at modulus_bits per entry

    @property
    def wire_bytes(self) -> int:
        return ID_BYTES + len(self.payload)


@dataclass(frozen=True)
class UnmaskShares:
    sender: int
    seed_shares: dict[int, bytes]  # owner (survivor) -> share of its self-mask seed
    key_shares: dict[int, bytes]  # owner (dropped) -> share of its mask private key

    @property
    def wire_bytes(self) -> int:
        n = len(self.seed_shares) + len(self.key_shares)
        return ID_BYTES + n * (ID_BYTES + shamir.SHARE_BYTES)


# ---------------------------------------------------------------------------------------------
# Client


class SecAggClient:
    """One client: holds its encoded input (uint32, already reduced mod 2^m) and its secrets."""

    def __init__(self, cid: int, config: SecAggConfig, encoded: np.ndarray):
        if encoded.dtype != np.uint32 or encoded.shape != (config.length,):
            raise ValueError(f"client {cid}: input must be uint32 of shape ({config.length},)")
        self.cid = cid
        self.config = config
        self._input = encoded
        self._cipher_key = crypto.new_private_key()
        self._mask_key = crypto.new_private_key()
        self._seed = crypto.random_seed()
        self._neighbours: dict[int, tuple[bytes, bytes]] = {}
        self._held: dict[int, tuple[bytes, bytes]] = {}  # owner -> (key share, seed share)
        self._masked_with: set[int] = set()
        self._channels: dict[int, bytes] = {}
        self.uploaded = 0
        self.downloaded = 0

    def advertise(self) -> AdvertiseKeys:
        msg = AdvertiseKeys(self.cid, crypto.public_bytes(self._cipher_key),
                            crypto.public_bytes(self._mask_key))
        self.uploaded += msg.wire_bytes
        return msg

    def share_keys(self, roster: dict[int, tuple[bytes, bytes]]) -> SharedKeys:
        """Shamir-share the mask key and self-mask seed among the live neighbours in `roster`."""
        self.downloaded += sum(ID_BYTES + len(a) + len(b) for a, b in roster.values())
        self._neighbours = dict(roster)
        holders = sorted(roster)
        t = threshold_for(self.config, len(holders))
        key_shares = shamir.split(crypto.private_bytes(self._mask_key), holders, t)
        seed_shares = shamir.split(self._seed, holders, t)
        sealed = {}
        for v in holders:
            plaintext = (self.cid.to_bytes(ID_BYTES, "big") + v.to_bytes(ID_BYTES, "big")
                         + key_shares[v] + seed_shares[v])
            sealed[v] = crypto.seal(self._channel_key(v), plaintext, self.config.round_tag)
        msg = SharedKeys(self.cid, sealed)
        self.uploaded += msg.wire_bytes
        return msg

    def masked_input(self, inbox: dict[int, bytes]) -> MaskedInput:
        """Decrypt the shares addressed here, then upload the input under all masks.

        Pairwise masks are added for exactly the neighbours whose shares arrived (the server's
        U1), so the server can remove the masks of any of them that drop later.
        """
        self.downloaded += sum(ID_BYTES + len(c) for c in inbox.values())
        needed = threshold_for(self.config, len(self._neighbours))
        if len(inbox) < needed:
            raise SecAggAbort(
                f"secure aggregation aborted by client {self.cid}: only {len(inbox)} of its "
                f"neighbours shared keys but {needed} are needed to mask its input safely; "
                "nothing was sent")
        n_share = shamir.SHARE_BYTES
        for owner, sealed in inbox.items():
            if owner not in self._neighbours:
                raise ValueError(f"client {self.cid}: a share from non-neighbour {owner}")
            plain = crypto.open_sealed(self._channel_key(owner), sealed, self.config.round_tag)
            sender, receiver = (int.from_bytes(plain[i:i + ID_BYTES], "big") for i in (0, 4))
            if (sender, receiver) != (owner, self.cid):
                raise ValueError(f"client {self.cid}: a share with the wrong addressing")
            body = plain[2 * ID_BYTES:]
            self._held[owner] = (body[:n_share], body[n_share:2 * n_share])
        self._masked_with = set(inbox)
        y = self._input + crypto.prg_uint32(self._seed, self.config.length)
        for v in sorted(self._masked_with):
            mask = pairwise_mask(self._mask_key, self._neighbours[v][1], self.config)
            if self.cid < v:
                y += mask
            else:
                y -= mask
        y &= self.config.modulus_mask
        msg = MaskedInput(self.cid, pack(y, self.config.modulus_bits))
        self.uploaded += msg.wire_bytes
        return msg

    def unmask(self, survivors: set[int], dropped: set[int]) -> UnmaskShares:
        """Reveal seed shares of survivors and mask-key shares of dropped neighbours, never both."""
        if survivors & dropped:
            raise ValueError(f"client {self.cid}: refusing to unmask {sorted(survivors & dropped)}"
                             " as both survivor and dropped")
        if self.cid not in survivors:
            raise ValueError(f"client {self.cid}: its own input is not counted; not unmasking")
        self.downloaded += ID_BYTES * (len(survivors) + len(dropped))
        seeds = {v: self._held[v][1] for v in survivors if v in self._held}
        keys = {v: self._held[v][0] for v in dropped if v in self._held}
        msg = UnmaskShares(self.cid, seeds, keys)
        self.uploaded += msg.wire_bytes
        return msg

    def _channel_key(self, peer: int) -> bytes:
        if peer not in self._channels:
            self._channels[peer] = crypto.agree(self._cipher_key, self._neighbours[peer][0],
                                                b"shares", self.config.round_tag)
        return self._channels[peer]


def pairwise_mask(own_mask_key, peer_mask_public: bytes, config: SecAggConfig) -> np.ndarray:
    """PRG(s_uv): the same vector for both ends of a pair, from their X25519 agreement."""
    seed = crypto.agree(own_mask_key, peer_mask_public, b"mask", config.round_tag)
    return crypto.prg_uint32(seed, config.length)


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
    """Run every step of the protocol among `inputs`' clients; raise SecAggAbort on failure."""
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
