"""Bit-packing of vectors mod 2^m onto the wire: m bits per entry, little-endian."""

from __future__ import annotations

import numpy as np


def pack(values: np.ndarray, bits: int) -> bytes:
    """The low `bits` bits of each uint32 entry, concatenated; ceil(n * bits / 8) bytes.

    Args:
        values: uint32 entries below 2^bits; bits: the ring's modulus bits.
    """
    if bits in (8, 16, 32):
        return values.astype(f"<u{bits // 8}").tobytes()
    as_bits = np.unpackbits(values.astype("<u4").view(np.uint8), bitorder="little")
    return np.packbits(as_bits.reshape(-1, 32)[:, :bits], bitorder="little").tobytes()


def unpack(payload: bytes, bits: int, length: int) -> np.ndarray:
    """Invert `pack`: `length` uint32 entries.

    Args:
        payload: what `pack` returned; bits: as packed; length: the entries.
    """
    if bits in (8, 16, 32):
        return np.frombuffer(payload, dtype=f"<u{bits // 8}", count=length).astype(np.uint32)
    raw = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), bitorder="little")
    entry_bits = np.zeros((length, 32), dtype=np.uint8)
    entry_bits[:, :bits] = raw[: length * bits].reshape(length, bits)
    return np.packbits(entry_bits, bitorder="little").view("<u4").astype(np.uint32)
