"""What a run records is pinned: the same weights, iterates, history, Claim, rounds.jsonl and
ledger as the code before the round-cost work recorded (tests/recorded/round_records.json), and a
run killed mid-way and resumed leaves the records of an uninterrupted run, byte for byte."""

from __future__ import annotations

import json

import pytest
from round_records import BASE, GOLDEN, SCENARIOS, run, spec_of

from privbench.privacy.budget_monitor import BudgetMonitor


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


# Scenarios whose noise changed on purpose: the old 1e-4 calibration search left their plan's
# epsilon more than 1e-3 below the target (issue 16); the search now goes on to 1e-6 there.
RECALIBRATED = {"example"}


# The monitor reads its epsilons with numpy (the same sums; numpy's vectorised exp differs from
# math.exp, and between instruction sets, in the last bits: 2e-12 relative measured on an AVX2
# machine against the AVX-512 one that recorded them): equal to 1e-9 relative, which any change
# of the accounting exceeds by orders of magnitude.
MONITOR_FIGURES = ("epsilon_planned", "epsilon_spent")


def _rows(records: dict) -> list[dict]:
    return [json.loads(line) for line in records["rounds_jsonl"].splitlines()]


def _split(rows: list[dict]) -> tuple[list[dict], list[list[float]]]:
    rest = [{k: v for k, v in r.items() if k not in MONITOR_FIGURES} for r in rows]
    figures = [[r[k] for k in MONITOR_FIGURES if k in r] for r in rows]
    return rest, figures


def _close(row: dict) -> dict:
    """A recorded row with its training figures (losses, norms: floats) compared to 1e-5, as
    the weights are (round_records.py says why); every other value exactly."""
    return {k: pytest.approx(v, rel=1e-5) if isinstance(v, float) else v for k, v in row.items()}


def assert_same_records(got: dict, want: dict) -> None:
    for key in ("rounds_jsonl", "history"):
        rows = _rows(got) if key == "rounds_jsonl" else got[key]
        rest, figures = _split(rows)
        want_rest, want_figures = _split(_rows(want) if key == "rounds_jsonl" else want[key])
        assert rest == [_close(r) for r in want_rest], key
        assert figures == [pytest.approx(f, rel=1e-9) for f in want_figures], key
    for key in ("weights", "iterates"):  # fingerprints, to 1e-5 (round_records.py says why)
        assert len(got[key]) == len(want[key]), key
        assert got[key] == pytest.approx(want[key], rel=0, abs=1e-5), key
    # The claim and the ledger: every field and event exactly, each float to 1e-9 relative
    # (the calibration and the PLD epsilons run through numpy's vectorised exp and FFT, whose
    # last bits differ between instruction sets: 1e-12 relative measured).
    assert _floats_close(got["claim"], want["claim"]), "claim"
    got_ledger = [json.loads(line) for line in got["ledger_jsonl"].splitlines()]
    want_ledger = [json.loads(line) for line in want["ledger_jsonl"].splitlines()]
    assert _floats_close(got_ledger, want_ledger), "ledger_jsonl"


def _floats_close(a, b) -> bool:
    """Same structure and values, floats to 1e-9 relative."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_floats_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_floats_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9)
    return a == b


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n not in RECALIBRATED])
def test_a_run_records_what_the_code_before_the_speed_up_recorded(name, golden, tmp_path):
    assert_same_records(run(spec_of(name), tmp_path), golden[name])


@pytest.mark.parametrize("name", sorted(RECALIBRATED))
def test_a_plan_calibrated_short_of_its_target_now_meets_it_within_1e_3(name, golden, tmp_path):
    from privbench.privacy import accounting

    got, old = run(spec_of(name), tmp_path), golden[name]
    z_new, z_old = got["claim"]["noise_multiplier"], old["claim"]["noise_multiplier"]
    assert z_old - 1e-4 <= z_new < z_old  # within the old search's step, a little less noise
    spec = spec_of(name)
    target = spec.privacy.epsilon

    def every_round(records: dict) -> float:  # the plan: a client in every round, as calibrated
        events = [accounting.event_from_dict(json.loads(line)["event"])
                  for line in records["ledger_jsonl"].splitlines()]
        return accounting.epsilon_with_fallback(accounting.compose_steps(events),
                                                spec.privacy.delta, spec.privacy.neighbouring)[0]

    assert abs(every_round(got) - target) < abs(every_round(old) - target) / 10  # nearer
    cohorts = [[h.get("cohort") for h in r["history"]] for r in (got, old)]
    assert cohorts[0] == cohorts[1]  # the same clients sampled: only the noise moved
    assert accounting.CALIBRATION_SLACK < 1e-3


class Crash(RuntimeError):
    pass


class CrashingMonitor(BudgetMonitor):
    """A monitor whose process dies right after it wrote round `at`: the ledger and rounds.jsonl
    hold that round, the checkpoint does not."""

    at = 3

    def __call__(self, record, event=None):
        super().__call__(record, event)
        if record["round"] == self.at:
            raise Crash


def _crash_after_round(at: int):
    def on_round(done: int, total: int) -> None:
        if done == at:
            raise Crash
    return on_round


@pytest.mark.parametrize("name", ["central", "example_eps4", "central_adaptive_schedule"])
@pytest.mark.parametrize("where", ["after_checkpoint", "before_checkpoint"])
def test_a_resumed_run_leaves_the_records_of_an_uninterrupted_run(name, where, golden, tmp_path,
                                                                   monkeypatch):
    spec = spec_of(name)
    if where == "after_checkpoint":
        with pytest.raises(Crash):
            run(spec, tmp_path, on_round=_crash_after_round(3))
    else:  # killed between writing round 3's records and its checkpoint
        import round_records

        monkeypatch.setattr(round_records, "BudgetMonitor", CrashingMonitor)
        with pytest.raises(Crash):
            run(spec, tmp_path)
        monkeypatch.setattr(round_records, "BudgetMonitor", BudgetMonitor)
    resumed = run(spec, tmp_path)
    straight = run(spec, tmp_path / "straight")
    assert resumed["rounds_jsonl"] == straight["rounds_jsonl"]  # byte for byte
    assert resumed["ledger_jsonl"] == straight["ledger_jsonl"]
    spent = [json.loads(line)["epsilon_spent"] for line in resumed["rounds_jsonl"].splitlines()]
    assert len(spent) == spec.train.rounds and spent == sorted(spent) and spent[0] > 0
    assert resumed == straight
    assert_same_records(resumed, golden[name])  # and both are what the old code recorded


def test_a_fixed_cohort_run_reports_its_rdp_epsilon_spent_round_by_round(tmp_path):
    """Fixed cohorts are accounted with RDP (PLD has no sampling-without-replacement event): the
    round monitor composes the same events the same way, and ends at the Claim's epsilon."""
    from privbench.spec.schema import CellSpec

    spec = CellSpec.model_validate({**BASE, "train": {**BASE["train"], "sampling": "fixed_cohort"},
                                    "privacy": {"epsilon": 4.0, "neighbouring": "replace_one"}})
    got = run(spec, tmp_path)
    spent = [row["epsilon_spent"] for row in _rows(got)]
    assert got["claim"]["accountant"] == "rdp" and len(spent) == spec.train.rounds
    assert spent == sorted(spent) and spent[-1] == pytest.approx(got["claim"]["epsilon"], rel=1e-9)


@pytest.mark.parametrize("name", ["example_eps4", "local_replace_one"])
def test_per_client_settings_spend_what_the_claim_certifies_without_false_alarms(name, golden):
    """Example level and local DP: a client's epsilon composes only its own participations, so
    the budget chart's spent epsilon is the busiest client's, which the Claim certifies (it was
    every round's, 8.94 against a plan of 8 and a Claim of 7.0 for local DP, with an alarm).
    The identity test above holds a fresh run to these records."""
    rows = _rows(golden[name])
    spent = [r["epsilon_spent"] for r in rows]
    assert spent == sorted(spent) and not any("alarm" in r for r in rows)
    assert spent[-1] == pytest.approx(golden[name]["claim"]["epsilon"], rel=2e-3)
    assert spent[-1] <= rows[-1]["epsilon_planned"]
