"""The messages of a secure-aggregation round, one class per step, each reporting its size on the
wire: (0) a client's two X25519 public keys; (1) its Shamir shares of the mask key and self-mask
seed, each sealed for one neighbour; (2) its masked input; (3) its unmasking shares for the
survivors and the dropped."""

from __future__ import annotations

from dataclasses import dataclass

from privbench.trainers.secagg import shamir

ID_BYTES = 4


@dataclass(frozen=True)
class AdvertiseKeys:
    sender: int
    cipher_public: bytes
    mask_public: bytes

    @property
    def wire_bytes(self) -> int:
        """Bytes on the wire: the id and both public keys."""
        return ID_BYTES + len(self.cipher_public) + len(self.mask_public)


@dataclass(frozen=True)
class SharedKeys:
    sender: int
    sealed: dict[int, bytes]  # recipient -> AEAD(ids || share of mask key || share of seed)

    @property
    def wire_bytes(self) -> int:
        """Bytes on the wire: the sender's id and each (recipient id, sealed share) pair."""
        return ID_BYTES + sum(ID_BYTES + len(c) for c in self.sealed.values())


@dataclass(frozen=True)
class MaskedInput:
    sender: int
    payload: bytes  # the masked vector, packed at modulus_bits per entry

    @property
    def wire_bytes(self) -> int:
        """Bytes on the wire: the id and the packed masked input."""
        return ID_BYTES + len(self.payload)


@dataclass(frozen=True)
class UnmaskShares:
    sender: int
    seed_shares: dict[int, bytes]  # owner (survivor) -> share of its self-mask seed
    key_shares: dict[int, bytes]  # owner (dropped) -> share of its mask private key

    @property
    def wire_bytes(self) -> int:
        """Bytes on the wire: the id and each (client id, share) pair revealed."""
        n = len(self.seed_shares) + len(self.key_shares)
        return ID_BYTES + n * (ID_BYTES + shamir.SHARE_BYTES)
