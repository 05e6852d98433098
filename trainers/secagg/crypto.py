"""Cryptographic primitives for secure aggregation: X25519, HKDF, AES-CTR masks, AEAD shares."""

from __future__ import annotations

import functools
import os

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12
RAW = serialization.Encoding.Raw


def new_private_key() -> X25519PrivateKey:
    """A fresh X25519 private key from the operating system's CSPRNG."""
    return X25519PrivateKey.generate()


def private_bytes(key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of an X25519 private key (what gets secret-shared)."""
    return key.private_bytes(RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def private_from_bytes(data: bytes) -> X25519PrivateKey:
    """The X25519 private key of 32 raw bytes (as `private_bytes` wrote them)."""
    return X25519PrivateKey.from_private_bytes(data)


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of the public key that goes on the wire."""
    return key.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)


def agree(own: X25519PrivateKey, peer_public: bytes, purpose: bytes, context: bytes) -> bytes:
    """A 32-byte key from X25519 agreement, stretched by HKDF-SHA256 bound to purpose and round.

    Args:
        own: this party's key; peer_public: the peer's raw public key;
        purpose: what the key is for (b"mask", ...); context: the round tag (HKDF salt).
    """
    shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=context,
                info=b"privbench-secagg/" + purpose).derive(shared)


def random_seed() -> bytes:
    """A 32-byte self-mask seed from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


def prg_uint32(seed: bytes, length: int) -> np.ndarray:
    """`length` pseudo-random uint32 words: the AES-256-CTR keystream under `seed` (zero IV).

    Each seed is used for one mask only (seeds are bound to the round by HKDF), so a fixed IV
    is safe; AES-CTR is a PRF-based PRG, so the words are indistinguishable from uniform.

    Args:
        seed: a 32-byte key; length: how many words.
    """
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(b"\x00" * 16)).encryptor()
    stream = encryptor.update(_zeros(4 * length))  # CTR mode: finalize() adds nothing
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32, copy=False)


@functools.lru_cache(maxsize=4)
def _zeros(n: int) -> bytes:
    return bytes(n)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """ChaCha20-Poly1305 encryption: nonce || ciphertext || tag, bound to `associated` data.

    Args:
        key: a 32-byte key; plaintext: the message; associated: the data it is bound to.
    """
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """Decrypt and authenticate what `seal` produced; raises InvalidTag on tampering.

    Args:
        key: the 32-byte key; sealed: what `seal` returned; associated: the same bound data.
    """
    return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
