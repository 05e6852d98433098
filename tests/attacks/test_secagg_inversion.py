"""With secure aggregation the curious server holds only each round's sum: its inversion attacks
run on that sum (surface `aggregates`) and recover far less than from single client updates."""

from __future__ import annotations

from privbench.run.cell import run_cell
from privbench.spec.load import validate_suite
from privbench.spec.suite import expand

SPEC = {
    "name": "secagg-inversion", "seed": 1,
    "data": {"name": "digits", "clients": 898},  # one record each: one local step of batch 1
    "model": {"hidden": [32]},
    "train": {"rounds": 2, "cohort": 20, "local_epochs": 1, "batch_size": 1, "lr": 0.1},
    "privacy": {"epsilon": float("inf"), "clip": 1.0},
    "attacks": {"loss": {"enabled": False},
                "inversion": {"enabled": True, "rounds": [1], "clients": 10}},
    "sweep": {"secagg.enabled": [False, True]},
}


def _rows(result):
    return {(m.scorer, m.metric): m for m in result.metrics if m.scorer.startswith("inversion")}


def test_inversion_from_the_secure_sum_fails_where_single_updates_leak(tmp_path):
    plain_cell, secure_cell = expand(validate_suite(SPEC, "test"), "test")
    plain, secure = run_cell(plain_cell, tmp_path), run_cell(secure_cell, tmp_path)
    assert plain.status == secure.status == "ok", (plain.error, secure.error)
    plain_rows, secure_rows = _rows(plain), _rows(secure)
    # without secure aggregation the server inverts single updates; with it, only the sum
    assert plain_rows[("inversion_analytic", "psnr")].surface == "client_updates"
    assert not any(m.surface == "client_updates" for m in secure_rows.values())
    single = plain_rows[("inversion_analytic", "psnr")].value
    from_sum = secure_rows[("inversion_analytic_aggregate", "psnr")]
    assert from_sum.surface == "aggregates"
    assert from_sum.details["source"] == "the secure-aggregation sum the server decoded"
    # single updates invert exactly (PSNR capped at 100 dB); from the sum, below the 20 dB that
    # counts as a recognisable reconstruction
    assert single > 90.0 and from_sum.value < 20.0
    # the decoded secure sum is the plain sum up to fixed-point rounding
    plain_sum = plain_rows[("inversion_analytic_aggregate", "psnr")].value
    assert abs(plain_sum - from_sum.value) < 0.5
