"""Secure aggregation protocol: exact sums under dropouts, clean aborts, uniform-looking uploads."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from privbench.errors import PrivbenchError
from privbench.trainers.secagg import crypto, shamir
from privbench.trainers.secagg.client import SecAggClient
from privbench.trainers.secagg.encoding import FixedPoint
from privbench.trainers.secagg.packing import pack, unpack
from privbench.trainers.secagg.protocol import Dropouts, SecAggServer, run_secure_sum
from privbench.trainers.secagg.setup import SecAggAbort, SecAggConfig, neighbour_graph

LENGTH = 64


def _encoded_inputs(n: int, fp: FixedPoint, seed: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """n clipped random updates, fixed-point encoded: (ring inputs by id, their integers)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, LENGTH))
    x /= np.maximum(1.0, np.linalg.norm(x, axis=1, keepdims=True))
    q = fp.quantise(x, rng)
    return {u: fp.to_ring(q[u]) for u in range(n)}, q


@pytest.mark.parametrize("n", [10, 100])
@pytest.mark.parametrize("drop_fraction", [0.0, 0.1, 0.33])
def test_decoded_sum_equals_the_exact_sum_of_encoded_inputs(n, drop_fraction):
    fp = FixedPoint(coord_bound=1.0, bits=16, modulus_bits=32)
    inputs, q = _encoded_inputs(n, fp, seed=n)
    rng = np.random.default_rng(1)
    dropped = frozenset(rng.choice(n, size=round(drop_fraction * n), replace=False).tolist())
    config = SecAggConfig(length=LENGTH, threshold_fraction=0.6)
    out = run_secure_sum(inputs, config, Dropouts(after_shares=dropped))
    assert out.contributors == sorted(set(range(n)) - dropped)
    np.testing.assert_array_equal(fp.from_ring(out.total), q[out.contributors].sum(axis=0))


def test_secagg_plus_sums_exactly_with_sparse_neighbourhoods_and_late_dropouts():
    n, k = 100, 24
    fp = FixedPoint(coord_bound=1.0, bits=12, modulus_bits=20)
    inputs, q = _encoded_inputs(n, fp, seed=5)
    config = SecAggConfig(length=LENGTH, threshold_fraction=0.5, neighbours=k, modulus_bits=20,
                          graph_seed=3)
    graph = neighbour_graph(list(range(n)), k, 3)
    assert all(len(vs) == k for vs in graph.values())
    assert all(u in graph[v] for u, vs in graph.items() for v in vs)  # symmetric
    drops = Dropouts(after_shares=frozenset(range(0, 100, 10)),  # masked with, never uploaded
                     after_input=frozenset(range(5, 100, 20)))  # uploaded, never helped unmask
    out = run_secure_sum(inputs, config, drops)
    assert len(out.contributors) == 90
    np.testing.assert_array_equal(fp.from_ring(out.total), q[out.contributors].sum(axis=0))
    # each client's traffic grows with k, not n: shares go to k neighbours only
    assert max(len(out.server.ciphertexts[u]) for u in out.server.ciphertexts) == k


def _everything_held(obj, seen=None) -> list:
    """Every numpy array and bytes value reachable from `obj` (the server's whole state)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, (np.ndarray, bytes)):
        return [obj]
    if isinstance(obj, dict):
        return [v for x in (*obj.keys(), *obj.values()) for v in _everything_held(x, seen)]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [v for x in obj for v in _everything_held(x, seen)]
    if hasattr(obj, "__dict__"):
        return _everything_held(vars(obj), seen)
    return []


@pytest.mark.parametrize("stage", ["after_shares", "after_input"])
def test_too_many_dropouts_abort_cleanly_and_the_server_holds_no_individual_update(stage,
                                                                                   monkeypatch):
    from privbench.trainers.secagg import protocol

    n = 10
    fp = FixedPoint(coord_bound=1.0, bits=16, modulus_bits=32)
    inputs, _ = _encoded_inputs(n, fp, seed=7)
    servers = []
    real_server = protocol.SecAggServer

    def recording_server(*args, **kwargs):
        servers.append(real_server(*args, **kwargs))
        return servers[-1]

    monkeypatch.setattr(protocol, "SecAggServer", recording_server)
    config = SecAggConfig(length=LENGTH, threshold_fraction=0.6)
    drops = Dropouts(**{stage: frozenset(range(5))})
    with pytest.raises(SecAggAbort, match=r"aborted.*too many dropouts.*nothing was reconstructed"):
        run_secure_sum(inputs, config, drops)
    server = servers[0]
    held = _everything_held(server)
    assert held, "the inspection must see the server's state"
    for x in inputs.values():
        raw = x.tobytes()
        for item in held:
            if isinstance(item, np.ndarray):
                assert not np.array_equal(item, x)
                if item.shape == x.shape:  # a masked input: independent of every raw input
                    assert abs(np.corrcoef(item.astype(float), x.astype(float))[0, 1]) < 0.6
            else:
                assert raw not in item
    # no secret is recoverable from what arrived: fewer than t shares of anything
    t = math.ceil(0.6 * (n - 1))
    for table in (server.seed_shares, server.key_shares):
        assert all(len(shares) < t for shares in table.values())


def test_a_client_with_too_few_masking_neighbours_refuses_to_upload():
    config = SecAggConfig(length=LENGTH, threshold_fraction=0.6)
    clients = {u: SecAggClient(u, config, np.zeros(LENGTH, dtype=np.uint32)) for u in range(6)}
    server = SecAggServer(config, list(clients))
    rosters = server.rosters([c.advertise() for c in clients.values()])
    inboxes = server.route([clients[u].share_keys(rosters[u]) for u in range(6)])
    few = dict(list(inboxes[0].items())[:2])  # 2 of 5 neighbours' shares, 3 needed
    with pytest.raises(SecAggAbort, match="only 2 of its neighbours shared keys"):
        clients[0].masked_input(few)
    assert clients[0].masked_input(inboxes[0]).sender == 0


def test_a_single_masked_update_is_indistinguishable_from_uniform():
    n, length = 3, 1 << 15
    structured = np.full(length, 7, dtype=np.uint32)  # an input far from uniform
    config = SecAggConfig(length=length, threshold_fraction=0.6)
    out = run_secure_sum({u: structured.copy() for u in range(n)}, config)
    masked = out.server.masked[0]

    def byte_p_value(words: np.ndarray) -> float:
        counts = np.bincount(words.view(np.uint8), minlength=256)
        return stats.chisquare(counts).pvalue

    def top_bucket_p_value(words: np.ndarray) -> float:
        counts = np.bincount(words >> 26, minlength=64)
        return stats.chisquare(counts).pvalue

    assert byte_p_value(masked) > 1e-6
    assert top_bucket_p_value(masked) > 1e-6
    assert byte_p_value(structured) < 1e-12  # the same test rejects the unmasked input
    np.testing.assert_array_equal(out.total, structured * n)


def test_shamir_recovers_from_any_threshold_subset_and_not_fewer():
    secret = crypto.random_seed()
    shares = shamir.split(secret, list(range(9)), 5)
    assert shamir.combine({h: shares[h] for h in (0, 2, 4, 6, 8)}, 5) == secret
    assert shamir.combine({h: shares[h] for h in (1, 3, 5, 7, 8)}, 5) == secret
    with pytest.raises(ValueError, match="cannot recover"):
        shamir.combine({h: shares[h] for h in range(4)}, 5)
    # four shares fit a degree-4 polynomial through any secret: interpolation gives garbage
    wrong = {h: shares[h] for h in range(4)} | {8: bytes(shamir.SHARE_BYTES)}
    assert shamir.combine(wrong, 5, length=66) != secret.rjust(66, b"\0")


def test_packing_round_trips_at_any_modulus():
    rng = np.random.default_rng(0)
    for bits in (8, 20, 27, 32):
        v = rng.integers(0, 1 << bits, size=1001, dtype=np.uint64).astype(np.uint32)
        payload = pack(v, bits)
        assert len(payload) == math.ceil(1001 * bits / 8)
        np.testing.assert_array_equal(unpack(payload, bits, 1001), v)


def test_overflow_check_fails_clearly_before_a_sum_could_wrap():
    FixedPoint(coord_bound=1.0, bits=16, modulus_bits=32).check_overflow(1000, 0.0)
    with pytest.raises(PrivbenchError, match=r"secagg.bits = 24: .*wraps modulo 2\^32"):
        FixedPoint(coord_bound=1.0, bits=24, modulus_bits=32).check_overflow(1000, 0.0)
    with pytest.raises(PrivbenchError, match=r"secagg\.bits"):
        FixedPoint(coord_bound=1.0, bits=16, modulus_bits=32).check_overflow(10, 1e9)
