"""Secure aggregation per-client cost at 1,024 clients and a 2^20-entry update: computation time
and communication expansion (bytes uploaded with SecAgg / bytes of the plain quantised update),
for SecAgg (all pairs) and SecAgg+ (k-regular, k ~ 3 log2 n), and SecAgg+ as n grows.

One representative client runs every step of its side of the protocol for real (X25519, HKDF,
Shamir splitting to all its neighbours, ChaCha20-Poly1305 sealing and opening, AES-CTR masks of
the full length, bit-packing, unmasking answers). Its neighbours exist with real keys, and the
shares addressed to it are real ciphertexts under the real pairwise keys; only their contents
(which cost the same to open whatever they hold) are random bytes, so that simulating 1,023
other clients' Shamir splits is not needed. The baseline is the plain client's work: quantise
and pack its update. Server-side cost is not measured here.

Run: .venv/bin/python -m pytest benchmarks/test_bench_secagg.py -q -s
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from privbench.trainers.secagg import crypto
from privbench.trainers.secagg.client import SecAggClient
from privbench.trainers.secagg.encoding import FixedPoint
from privbench.trainers.secagg.messages import ID_BYTES
from privbench.trainers.secagg.packing import pack
from privbench.trainers.secagg.setup import SecAggConfig, neighbour_graph, secagg_plus_degree

LENGTH = 1 << 20
CLIENTS = 1024
BITS = 16  # quantisation of the plain update
PLAIN_BYTES = math.ceil(LENGTH * BITS / 8)


def _modulus_bits(n: int) -> int:
    """Room for the sum of n BITS-bit inputs: BITS + ceil(log2 n) bits."""
    return min(32, BITS + math.ceil(math.log2(n)))


@pytest.fixture(scope="module")
def update():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, LENGTH))
    return x / np.linalg.norm(x)


def _one_client(n: int, neighbours: int, encoded: np.ndarray, modulus_bits: int):
    """Set up client 0 among n clients with real keys; return (client, roster, inbox)."""
    config = SecAggConfig(length=LENGTH, neighbours=neighbours, modulus_bits=modulus_bits,
                          round_tag=b"bench")
    graph = neighbour_graph(list(range(n)), neighbours, seed=1)
    me = SecAggClient(0, config, encoded)
    others = {v: SecAggClient(v, config, encoded) for v in graph[0]}
    roster = {v: (crypto.public_bytes(c._cipher_key), crypto.public_bytes(c._mask_key))
              for v, c in others.items()}
    my_public = crypto.public_bytes(me._cipher_key)
    inbox = {}
    for v, c in others.items():
        key = crypto.agree(c._cipher_key, my_public, b"shares", config.round_tag)
        plain = v.to_bytes(ID_BYTES, "big") + (0).to_bytes(ID_BYTES, "big") + os.urandom(132)
        inbox[v] = crypto.seal(key, plain, config.round_tag)
    return me, roster, inbox


def _client_round(me: SecAggClient, roster, inbox, update, fp) -> int:
    me._input = fp.to_ring(fp.quantise(update, np.random.default_rng(1))[0])  # as the baseline
    me.advertise()
    me.share_keys(roster)
    me.masked_input(inbox)
    me.unmask(set(roster) | {0}, set())
    return me.uploaded


def _plain_client(update: np.ndarray) -> bytes:
    fp = FixedPoint(coord_bound=1.0, bits=BITS, modulus_bits=32)
    q = fp.quantise(update, np.random.default_rng(1))
    return pack(fp.to_ring(q[0]), BITS)


def _run(benchmark, update, n: int, neighbours: int, modulus_bits: int):
    fp = FixedPoint(coord_bound=1.0, bits=BITS, modulus_bits=modulus_bits)
    encoded = fp.to_ring(fp.quantise(update, np.random.default_rng(1))[0])
    holder = {}

    def setup():
        holder["args"] = _one_client(n, neighbours, encoded, modulus_bits)
        return (*holder["args"], update, fp), {}

    uploaded = benchmark.pedantic(_client_round, setup=setup, rounds=3, iterations=1)
    me = holder["args"][0]
    expansion = uploaded / PLAIN_BYTES
    benchmark.extra_info.update({
        "clients": n, "neighbours": len(holder["args"][1]), "modulus_bits": modulus_bits,
        "uploaded_bytes": uploaded, "plain_bytes": PLAIN_BYTES, "expansion": expansion,
        "downloaded_bytes": me.downloaded})
    print(f"\n  n={n} neighbours={len(holder['args'][1])} m={modulus_bits}: uploaded "
          f"{uploaded} B vs plain {PLAIN_BYTES} B -> expansion x{expansion:.3f}")


@pytest.mark.benchmark(group="secagg client, n=1024, 2^20 entries")
@pytest.mark.parametrize("variant", ["baseline: plain quantise+pack"])
def test_plain_client(benchmark, update, variant):
    """The plain client's work, quantise and pack: the group's baseline."""
    payload = benchmark.pedantic(_plain_client, args=(update,), rounds=5, iterations=1)
    assert len(payload) == PLAIN_BYTES


@pytest.mark.benchmark(group="secagg client, n=1024, 2^20 entries")
@pytest.mark.parametrize("modulus_bits", [_modulus_bits(CLIENTS), 32])
def test_secagg_client(benchmark, update, modulus_bits):
    _run(benchmark, update, CLIENTS, 0, modulus_bits)


@pytest.mark.benchmark(group="secagg client, n=1024, 2^20 entries")
@pytest.mark.parametrize("modulus_bits", [_modulus_bits(CLIENTS), 32])
def test_secagg_plus_client(benchmark, update, modulus_bits):
    _run(benchmark, update, CLIENTS, secagg_plus_degree(CLIENTS), modulus_bits)


@pytest.mark.benchmark(group="secagg+ client vs n, 2^20 entries")
@pytest.mark.parametrize("n", [128, 1024, 8192, 65536],
                         ids=["baseline n=128", "n=1024", "n=8192", "n=65536"])
def test_secagg_plus_client_scaling(benchmark, update, n):
    """A fixed 32-bit modulus, so that only the neighbourhood (k ~ 3 log2 n) varies with n."""
    _run(benchmark, update, n, secagg_plus_degree(n), 32)
