"""A secure-aggregation client (Bonawitz et al. 2017; SecAgg+): it advertises keys, Shamir-shares
its mask key and a fresh self-mask seed among its neighbours (sealed with ChaCha20-Poly1305 under
pairwise agreed keys), uploads x + PRG(b_u) + sum_v +-PRG(s_uv) mod 2^m, and in the unmasking step
returns, per neighbour, the share of the self-mask seed (if that neighbour's input arrived) or of
its mask key (if it dropped after the keys were shared), never both."""

from __future__ import annotations

import numpy as np

from privbench.trainers.secagg import crypto, shamir
from privbench.trainers.secagg.messages import (
    ID_BYTES,
    AdvertiseKeys,
    MaskedInput,
    SharedKeys,
    UnmaskShares,
)
from privbench.trainers.secagg.packing import pack
from privbench.trainers.secagg.setup import (
    SecAggAbort,
    SecAggConfig,
    threshold_for,
)


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
        """The protocol's first message: this client's X25519 public keys (cipher and mask), counted
        as uploaded."""
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
        """Reveal seed shares of survivors and mask-key shares of dropped neighbours, never both.

        Args:
            survivors: the clients whose masked input the server holds; dropped: those it lacks.
        Returns:
            The shares, counted as uploaded.
        Raises:
            ValueError: a client named in both sets, or this client not among the survivors.
        """
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
    """PRG(s_uv): the same vector for both ends of a pair, from their X25519 agreement.

    Args:
        own_mask_key: this client's X25519 mask key; peer_mask_public: the peer's public key;
        config: the round (its tag binds the seed, its length the vector's).
    Returns:
        (length,) uint32.
    """
    seed = crypto.agree(own_mask_key, peer_mask_public, b"mask", config.round_tag)
    return crypto.prg_uint32(seed, config.length)
