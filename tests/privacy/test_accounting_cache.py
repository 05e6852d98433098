"""The accounting cache: a value read back (from memory or from disk in a fresh process) is the
value computed, to the last bit; a file that does not hold the key asked for, or was written by
other accounting code, is never trusted; an unwritable cache only costs the recomputation."""

from __future__ import annotations

import json
import math

import pytest

from privbench.privacy import accounting, accounting_cache
from privbench.privacy.budget_monitor import BudgetPlan
from privbench.spec.schema import CellSpec

EVENT = accounting.poisson_gaussian_event(2.0, 0.1, 4)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVBENCH_CACHE", str(tmp_path / "cache"))
    accounting_cache.clear_memory()
    yield tmp_path / "cache" / accounting_cache.FOLDER
    accounting_cache.clear_memory()


def _uncached_claim_figures() -> tuple:
    """The figures computed by the accountants themselves, bypassing the cache."""
    return (accounting._epsilon_with_fallback(EVENT, 1e-5, "add_or_remove_one", None, None),
            accounting.PLDComposer("add_or_remove_one", accounting.PLD_DISCRETIZATION)
            .compose(EVENT).epsilon(1e-5))


def test_cached_epsilons_are_the_computed_ones_in_this_process_and_the_next(cache):
    want_fallback, want_pld = _uncached_claim_figures()
    first = (accounting.epsilon_with_fallback(EVENT, 1e-5), accounting.pld_epsilon(EVENT, 1e-5),
             accounting.rdp_epsilon(EVENT, 1e-5))
    assert first[0] == want_fallback and first[1] == want_pld
    stored = sorted(p.parent.name for p in cache.rglob("*.json"))  # each computed once
    assert stored == ["epsilon_with_fallback", "pld_epsilon", "rdp_epsilon"]
    for path in cache.rglob("*.json"):
        json.loads(path.read_text())  # plain JSON, no pickle
    accounting_cache.clear_memory()  # a fresh process: read from disk
    again = (accounting.epsilon_with_fallback(EVENT, 1e-5), accounting.pld_epsilon(EVENT, 1e-5),
             accounting.rdp_epsilon(EVENT, 1e-5))
    assert again == first
    assert math.isfinite(first[2]) and first[2] >= first[1]  # RDP is the looser bound


def test_a_calibration_read_back_is_the_one_searched(cache):
    searched = accounting.calibrate_noise_multiplier(3.0, 1e-5, 0.05, 12)
    accounting_cache.clear_memory()
    assert any(cache.glob("calibration/*.json"))
    assert accounting.calibrate_noise_multiplier(3.0, 1e-5, 0.05, 12) == searched


def test_a_file_that_does_not_hold_the_key_asked_for_is_not_trusted(cache):
    key = ["an event", 1e-5]
    accounting_cache.store("pld_epsilon", key, 1.5)
    (path,) = cache.glob("pld_epsilon/*.json")
    entry = json.loads(path.read_text())
    path.write_text(json.dumps({"address": entry["address"].replace("an event", "other"),
                                "value": 0.1}))
    accounting_cache.clear_memory()
    assert accounting_cache.lookup("pld_epsilon", key) is None
    assert accounting_cache.memo("pld_epsilon", key, lambda: 1.5) == 1.5


def test_values_from_other_accounting_code_are_not_reused(cache, monkeypatch):
    accounting_cache.store("pld_epsilon", ["k"], 2.0)
    accounting_cache.clear_memory()
    monkeypatch.setattr(accounting_cache, "_stamp", "changed accounting code")
    assert accounting_cache.lookup("pld_epsilon", ["k"]) is None


def test_an_unwritable_cache_still_answers(tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("PRIVBENCH_CACHE", str(blocker))
    assert accounting_cache.memo("pld_epsilon", ["k"], lambda: math.inf) == math.inf
    accounting_cache.clear_memory()
    assert accounting_cache.memo("pld_epsilon", ["k"], lambda: 3.0) == 3.0  # recomputed


def test_the_monitor_reads_the_plan_it_would_compose(cache):
    spec = CellSpec.model_validate({"data": {"clients": 40}, "train": {"rounds": 6, "cohort": 8},
                                    "privacy": {"epsilon": 2.0}})
    composed = BudgetPlan(spec)
    want = [composed.epsilon_after(r) for r in range(1, 7)]
    accounting_cache.clear_memory()
    read = BudgetPlan(spec)
    assert read._eps == want  # the whole plan read at once, nothing composed
    assert [read.epsilon_after(r) for r in range(1, 7)] == want
    assert want == sorted(want) and want[-1] <= 2.0 * (1 + 1e-3)
