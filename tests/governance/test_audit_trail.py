"""The audit trail: every run appends a chained entry; any edited or removed entry is named."""

from __future__ import annotations

from conftest import run_cli

from privbench.governance.audit_trail import (
    LEGACY_FIELDS,
    append_run,
    canonical,
    entry_hash,
    verify,
)


def _log_with_entries(tmp_path, n: int = 3):
    log = tmp_path / "audit-trail.jsonl"
    for i in range(n):
        results = tmp_path / f"results{i}.json"
        results.write_text(f'{{"run": {i}}}')
        append_run(log, suite=f"suite{i}", run_dir=tmp_path / f"run{i}", spec={"seed": i},
                   data_fingerprints=[f"fp{i}"], results_path=results)
    return log


def test_changing_any_single_byte_of_any_entry_is_detected_and_named(tmp_path):
    log = _log_with_entries(tmp_path)
    original = log.read_bytes()
    assert verify(log).ok and verify(log).entries == 3
    starts = [0, *[i + 1 for i, b in enumerate(original) if b == ord("\n")][:-1]]
    for pos in range(len(original)):
        entry = max(i for i, s in enumerate(starts) if s <= pos)
        edited = bytearray(original)
        edited[pos] = ord("x") if original[pos] != ord("x") else ord("y")
        log.write_bytes(bytes(edited))
        result = verify(log)
        assert not result.ok, pos
        assert result.bad_line == entry + 1, (pos, result.reason)
        assert f"entry {entry}" in result.reason
    log.write_bytes(original)


def test_a_removed_entry_is_named(tmp_path):
    log = _log_with_entries(tmp_path, 4)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:1] + lines[2:]))
    result = verify(log)
    assert not result.ok and "entry 1 was removed" in result.reason
    log.write_text("".join(lines[:3]))  # the newest entry removed: only the kept head shows it
    assert verify(log).ok
    head = verify(log).head
    log.write_text("".join(lines))
    full_head = verify(log).head
    log.write_text("".join(lines[:3]))
    cut = verify(log, head=full_head)
    assert not cut.ok and "were removed" in cut.reason and head != full_head


def test_every_suite_run_is_logged_and_verify_cli_names_an_edited_entry(quick_run, tmp_path):
    out, _ = quick_run
    log = out.parent / "audit-trail.jsonl"
    proc = run_cli("verify", str(log))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "chain intact" in proc.stdout
    import hashlib
    import json

    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["results_hash"] == hashlib.sha256((out / "results.json").read_bytes()).hexdigest()
    assert entry["suite"] == "quick" and entry["code_version"].startswith("0.1.0+")
    edited_log = _log_with_entries(tmp_path)
    lines = edited_log.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"user":"', '"user":"mallory-', 1)
    edited_log.write_text("".join(lines))
    proc = run_cli("verify", str(edited_log))
    assert proc.returncode == 1
    assert "line 2 (entry 1) does not match its hash: it was edited" in proc.stdout


def test_entries_written_before_run_manifests_still_verify_and_the_chain_continues(tmp_path):
    log = tmp_path / "audit-trail.jsonl"
    body = {field: "x" for field in LEGACY_FIELDS} | {"seq": 0, "prev_hash": "0" * 64}
    log.write_text(canonical({**body, "hash": entry_hash(body)}) + "\n")
    assert verify(log).ok
    results = tmp_path / "results.json"
    results.write_text("{}")
    entry = append_run(log, suite="s", run_dir=tmp_path / "run", spec={}, data_fingerprints=[],
                       results_path=results, manifest_hash="ab" * 32)
    assert entry["seq"] == 1 and entry["manifest_hash"] == "ab" * 32
    assert verify(log).ok and verify(log).entries == 2
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0].replace('"suite":"x"', '"suite":"y"') + lines[1])
    assert verify(log).bad_line == 1  # a legacy entry is still covered by its hash
