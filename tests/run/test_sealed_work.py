"""An encrypted run's work folder (round checkpoints, history, ledger) and shadow cache are
sealed: no plaintext weights or JSON in their bytes (scanned), a crashed run resumes from the
sealed checkpoint to the weights of an uninterrupted run, a flipped byte is named, and the
shadow cache opens with the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from privbench.attacks.membership.shadows import ShadowPlan, cached_shadows
from privbench.data.partition import partition
from privbench.data.splits import load_split
from privbench.governance.crypto import SealError, load_run_key, use_key, write_run_key
from privbench.models import build_model
from privbench.privacy.ledger import ledger_plaintext
from privbench.run.manifest import record_run
from privbench.run.sealed import encryption_record
from privbench.spec.schema import CellSpec
from privbench.trainers import tabular_inputs, train_fedavg

SPEC = CellSpec.model_validate({
    "data": {"name": "breast_cancer", "clients": 6}, "model": {"hidden": [8]},
    "train": {"rounds": 4, "cohort": 3, "batch_size": 8}, "privacy": {"epsilon": 4.0}})


def _encrypted_run(tmp: Path) -> Path:
    run = tmp / "run"
    run.mkdir()
    record_run(run, encryption=encryption_record(load_run_key(write_run_key(tmp / "k"))))
    return run


def _train(work: Path | None, crash_at: int | None = None):
    data = load_split(SPEC.data, 0)
    model = build_model(SPEC.model, data.n_features, data.n_classes, 0)
    adapter, clients, public = tabular_inputs(model, data, partition(SPEC.data, data.y_train, 0))

    def on_round(done: int, _total: int) -> None:
        if done == crash_at:
            raise KeyboardInterrupt("killed")

    return train_fedavg(adapter, clients, public, SPEC.train, SPEC.privacy, 0, on_round,
                        work_dir=work)


def _plaintext_markers(params: dict[str, torch.Tensor]) -> list[bytes]:
    """Bytes that a plaintext checkpoint, iterate, history or ledger would hold."""
    return [b'"dtype"', b"__metadata__", b'"round"', b'"participants"', b"params.",
            *(p.contiguous().numpy().tobytes()[:16] for p in params.values())]


def test_a_sealed_checkpoint_holds_no_plaintext_and_resumes_to_the_same_weights(tmp_path):
    run = _encrypted_run(tmp_path)
    key = load_run_key(tmp_path / "k")
    work = run / "work" / "abc"
    with use_key(key):
        with pytest.raises(KeyboardInterrupt):
            _train(work, crash_at=3)
        files = [p for p in work.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"checkpoint.safetensors", "history.jsonl",
                                            "ledger.jsonl", "00001.safetensors"}
        plain = _train(None)  # the same run, uninterrupted, nothing on disk
        first_rounds = plain.observations.iterates[0]
        for path in files:
            data = path.read_bytes()
            for marker in _plaintext_markers(first_rounds):
                assert marker not in data, (path.name, marker)
        resumed = _train(work)
        ledger = ledger_plaintext(work / "ledger.jsonl").decode().splitlines()
    assert len(ledger) == 4 and '"participants"' in ledger[0]
    for name, p in plain.observations.final_params.items():
        assert torch.equal(resumed.observations.final_params[name], p)
    # without the key the work folder does not open; a flipped byte is named
    with pytest.raises(SealError, match="is encrypted"):
        _train(work)
    blob = bytearray((work / "iterates" / "00002.safetensors").read_bytes())
    blob[-5] ^= 1
    (work / "iterates" / "00002.safetensors").write_bytes(bytes(blob))
    with use_key(key), pytest.raises(SealError, match=r"work/abc/iterates/00002\.safetensors"):
        _train(work)


def test_an_encrypted_runs_shadow_cache_is_sealed_and_opens_with_the_key(tmp_path):
    run = _encrypted_run(tmp_path)
    data = load_split(SPEC.data, 0)
    model = build_model(SPEC.model, data.n_features, data.n_classes, 0)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    plan = ShadowPlan(SPEC.data, SPEC.train, 0.0, None, seed=1)
    inclusion = np.random.default_rng(0).random((2, len(data.y_train))) < 0.5
    with use_key(load_run_key(tmp_path / "k")):
        first = cached_shadows(run / "shadows", model, init, data.x_train, data.y_train,
                               inclusion, plan)
        again = cached_shadows(run / "shadows", model, init, data.x_train, data.y_train,
                               inclusion, plan)
    files = list((run / "shadows").iterdir())
    assert sorted(p.suffix for p in files) == [".json", ".safetensors"]
    for path in files:
        raw = path.read_bytes()
        assert b'"fingerprint"' not in raw and b'"dtype"' not in raw
        for p in first.values():
            assert p.contiguous().numpy().tobytes()[:16] not in raw
    for name, p in first.items():
        assert torch.equal(again[name], p)
    with pytest.raises(SealError, match="is encrypted"):
        cached_shadows(run / "shadows", model, init, data.x_train, data.y_train, inclusion, plan)


def test_the_live_rounds_file_of_an_encrypted_run_is_sealed_line_by_line(tmp_path):
    import json

    from privbench.privacy.budget_monitor import BudgetMonitor
    from privbench.run.sealed import plaintext_lines

    run = _encrypted_run(tmp_path)
    live = run / "cells" / ".abc.rounds.jsonl"
    with use_key(load_run_key(tmp_path / "k")):
        monitor = BudgetMonitor(live, SPEC)
        for r in (1, 2):
            monitor({"round": r, "cohort": 3})
        rows = [json.loads(t) for t in plaintext_lines(live).decode().splitlines()]
    assert [r["round"] for r in rows] == [1, 2] and "epsilon_planned" in rows[0]
    raw = live.read_bytes()
    assert b'"round"' not in raw and b"epsilon" not in raw and raw.count(b"\n") == 2
    lines = raw.decode().splitlines()
    live.write_text("\n".join([lines[1], lines[0]]) + "\n")  # two rounds swapped
    with use_key(load_run_key(tmp_path / "k")), pytest.raises(SealError, match="line 1"):
        plaintext_lines(live)
