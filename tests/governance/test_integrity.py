"""Content-addressed run folders: every stored file is hashed, and any edit, deletion or
corruption is named by `privbench verify`, refused by `gate` and recomputed on resume."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import write_suite

from privbench.cli.main import main
from privbench.errors import PrivbenchError
from privbench.governance.audit_trail import LOG_NAME, verify
from privbench.run.manifest import MANIFEST_FILE, file_hash, read_run_manifest
from privbench.run.runner import run_suite
from privbench.spec.suite import load_suite

# Five small cells: each resume test tampers with a different one.
SUITE = """
name = "integrity"
seed = 1
[data]
name = "digits"
clients = 20
[model]
hidden = [8]
[train]
rounds = 2
cohort = 5
batch_size = 16
[privacy]
delta = 1e-5
[attacks.loss]
enabled = true
[sweep]
"privacy.epsilon" = [1.0, 2.0, 4.0, 8.0, inf]
"""
FAIL_POLICY = "allow_no_dp_baseline = true\n[privacy]\nmax_epsilon = 4.0\n"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """(folder holding the suite file, the finished run folder); the audit log is beside it."""
    root = tmp_path_factory.mktemp("integrity")
    suite_path = write_suite(root / "integrity.toml", SUITE)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PRIVBENCH_AUDIT_LOG", raising=False)
        run_suite(load_suite(str(suite_path)), root / "runs" / "run", workers=1)
    return suite_path, root / "runs" / "run"


@pytest.fixture
def run(finished, tmp_path, monkeypatch) -> Path:
    """A private copy of the finished run, with its own copy of the audit log beside it."""
    monkeypatch.delenv("PRIVBENCH_AUDIT_LOG", raising=False)
    src = finished[1]
    dest = tmp_path / "runs" / "run"
    shutil.copytree(src, dest)
    log = json.loads((src.parent / LOG_NAME).read_text().splitlines()[-1])
    log["run_dir"] = str(dest.resolve())  # the copy's entry names the copy
    from privbench.governance.audit_trail import canonical, entry_hash

    log["hash"] = entry_hash(log)
    (dest.parent / LOG_NAME).write_text(canonical(log) + "\n")
    return dest


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _keys(run: Path) -> list[str]:
    return [c["key"] for c in json.loads((run / "suite.json").read_text())["cells"]]


def _label_key(run: Path, label: str) -> str:
    doc = json.loads((run / "suite.json").read_text())
    return next(c["key"] for c in doc["cells"] if c["label"] == label)


def test_a_finished_run_verifies_and_every_cell_file_is_in_its_manifest(run, capsys):
    code, out, _ = _cli(capsys, "verify", str(run))
    assert code == 0, out
    assert "files match their hashes; audit-trail entry 0" in out
    manifest = read_run_manifest(run)
    assert set(manifest["files"]) == {"suite.json", "results.sqlite", "results.json",
                                      "index.html"}
    for key in _keys(run):
        cell = json.loads((run / "cells" / key / MANIFEST_FILE).read_text())
        names = {"weights.safetensors", "iterates.safetensors", "claim.json", "card.json",
                 "ledger.jsonl", "observations.json", "rounds.jsonl", "result.json"}
        stored = {p.name for p in (run / "cells" / key).iterdir()} - {MANIFEST_FILE}
        assert set(cell["files"]) == stored and names - {"ledger.jsonl"} <= stored
        for name, entry in cell["files"].items():
            data = (run / "cells" / key / name).read_bytes()
            assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        assert manifest["cells"][key] == file_hash(run / "cells" / key / MANIFEST_FILE)


def _edit_results_epsilon(run: Path) -> None:
    doc = json.loads((run / "results.json").read_text())
    for cell in doc["cells"]:
        if cell["label"] == "epsilon=8":
            cell["claim"]["epsilon"] = 3.9
    (run / "results.json").write_text(json.dumps(doc, indent=2))


def _delete_failing_cell_from_results(run: Path) -> None:
    doc = json.loads((run / "results.json").read_text())
    doc["cells"] = [c for c in doc["cells"] if c["label"] != "epsilon=8"]
    (run / "results.json").write_text(json.dumps(doc, indent=2))


def test_forged_results_no_longer_turn_a_gate_fail_into_a_pass(run, tmp_path, capsys):
    policy = write_suite(tmp_path / "fail.toml", FAIL_POLICY)
    code, out, _ = _cli(capsys, "gate", "--policy", str(policy), str(run))
    assert code == 1 and "verdict: FAIL" in out
    assert _cli(capsys, "verify", str(run))[0] == 0  # gating rewrote gates.json, and hashed it
    pristine = (run / "results.json").read_bytes()
    for forge in (_edit_results_epsilon, _delete_failing_cell_from_results):
        forge(run)
        code, out, err = _cli(capsys, "gate", "--policy", str(policy), str(run))
        assert code == 2 and out == "", out
        assert err.count("\n") == 1 and "does not verify: results.json" in err, err
        code, out, _ = _cli(capsys, "verify", str(run))
        assert code == 1 and "results.json" in out
        (run / "results.json").write_bytes(pristine)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _edit_json(path: Path) -> None:
    doc = json.loads(path.read_text())
    if "epsilon" in doc:
        doc["epsilon"] = 0.5
    doc["forged"] = True
    path.write_text(json.dumps(doc))


EDITED = ("differs from its manifest hash", "bytes, its manifest says")  # same size, or not
TAMPERS = {
    "weights flipped": ("weights.safetensors", _flip, "differs from its manifest hash"),
    "weights truncated": ("weights.safetensors", _truncate, "truncated or edited"),
    "weights deleted": ("weights.safetensors", Path.unlink, "is missing"),
    "iterates flipped": ("iterates.safetensors", _flip, "differs from its manifest hash"),
    "claim edited": ("claim.json", _edit_json, EDITED),
    "card edited": ("card.json", _edit_json, EDITED),
    "ledger truncated": ("ledger.jsonl", _truncate, "truncated or edited"),
    "observations edited": ("observations.json", _edit_json, EDITED),
    "rounds deleted": ("rounds.jsonl", Path.unlink, "is missing"),
    "result edited": ("result.json", _edit_json, EDITED),
}


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_verify_names_the_first_cell_file_that_differs(run, case, capsys):
    name, tamper, reason = TAMPERS[case]
    key = _label_key(run, "epsilon=2")  # a DP cell: it has a ledger
    tamper(run / "cells" / key / name)
    code, out, _ = _cli(capsys, "verify", str(run))
    assert code == 1, out
    reasons = reason if isinstance(reason, tuple) else (reason,)
    assert f"cells/{key}/{name}" in out and any(r in out for r in reasons), out
    assert out.count("\n") == 1


@pytest.mark.parametrize("name", ["suite.json", "results.sqlite", "results.json", "index.html",
                                  "gates.json"])
def test_verify_names_an_edited_or_deleted_run_level_file(run, tmp_path, capsys, name):
    if name == "gates.json":  # written by a gate: hashed into the manifest like the rest
        policy = write_suite(tmp_path / "fail.toml", FAIL_POLICY)
        assert _cli(capsys, "gate", "--policy", str(policy), str(run))[0] == 1
        assert "gates.json" in read_run_manifest(run)["files"]
    _flip(run / name)
    code, out, _ = _cli(capsys, "verify", str(run))
    assert code == 1 and f"{name} differs from its manifest hash" in out, out
    (run / name).unlink()
    code, out, _ = _cli(capsys, "verify", str(run))
    assert code == 1 and f"{name} is missing" in out, out


def test_a_deleted_cell_and_an_added_file_are_named(run, capsys):
    key = _label_key(run, "epsilon=4")
    (run / "cells" / key / "backdoor.json").write_text("{}")
    code, out, _ = _cli(capsys, "verify", str(run))
    assert code == 1 and f"cells/{key}/backdoor.json is not in the cell's manifest" in out
    shutil.rmtree(run / "cells" / key)
    code, out, _ = _cli(capsys, "verify", str(run))
    assert code == 1 and f"cells/{key}/ is missing: the cell was deleted" in out


def test_rewriting_the_manifests_to_match_a_forgery_is_caught_by_the_audit_trail(run, capsys):
    key = _label_key(run, "epsilon=8")
    result = run / "cells" / key / "result.json"
    doc = json.loads(result.read_text())
    doc["claim"]["epsilon"] = 3.0
    result.write_text(json.dumps(doc))
    # a careful forger rehashes the cell's manifest and the run manifest
    cell_manifest = run / "cells" / key / MANIFEST_FILE
    entries = json.loads(cell_manifest.read_text())
    entries["files"]["result.json"] = {"sha256": file_hash(result),
                                       "bytes": result.stat().st_size}
    cell_manifest.write_text(json.dumps(entries))
    manifest = json.loads((run / MANIFEST_FILE).read_text())
    manifest["cells"][key] = file_hash(cell_manifest)
    (run / MANIFEST_FILE).write_text(json.dumps(manifest))
    code, out, _ = _cli(capsys, "verify", str(run))
    assert code == 1 and "manifest.json differs from the manifest hash this entry logged" in out
    log = run.parent / LOG_NAME
    trail = verify(log)
    assert not trail.ok and trail.bad_line == 1 and "rewritten" in trail.reason
    code, out, _ = _cli(capsys, "verify", str(log))
    assert code == 1 and "line 1 (entry 0)" in out


def test_the_trail_checks_each_entrys_results_hash_against_its_run_folder(run, capsys):
    log = run.parent / LOG_NAME
    assert verify(log).ok
    _edit_results_epsilon(run)
    trail = verify(log)
    assert not trail.ok and "results.json differs from the results hash this entry logged" \
        in trail.reason
    shutil.rmtree(run)  # a run folder that is gone is not checked; the chain still is
    assert verify(log).ok


def test_resume_refuses_a_run_whose_results_were_edited(finished, run, capsys):
    _edit_results_epsilon(run)
    code, out, err = _cli(capsys, "suite", str(finished[0]), "--out", str(run), "--quiet")
    assert code == 2 and err.count("\n") == 1 and out == "", err
    assert "the run does not verify: results.json" in err and "Traceback" not in err


def test_resume_recomputes_cells_whose_files_fail_their_hashes_and_says_so(finished, run, capsys):
    pristine = {key: (run / "cells" / key / "weights.safetensors").read_bytes()
                for key in _keys(run)}
    before = json.loads((run / "results.json").read_text())["cells"]
    tampered = {
        "epsilon=1": ("result.json", _edit_json),
        "epsilon=2": ("claim.json", _edit_json),
        "epsilon=4": ("weights.safetensors", _flip),
        "epsilon=8": ("weights.safetensors", _truncate),
        "epsilon=inf": ("weights.safetensors", Path.unlink),
    }
    for label, (name, tamper) in tampered.items():
        tamper(run / "cells" / _label_key(run, label) / name)
    suite = load_suite(str(finished[0]))
    events = []
    result = run_suite(suite, run, workers=1, on_event=events.append)
    assert result.loaded == []
    assert {suite.cells[i].label for i, _ in enumerate(suite.cells)
            if suite.cells[i].key in result.recomputed} == set(tampered)
    notices = {e[1]: e[2] for e in events if e[0] == "recompute"}
    for label, (name, _) in tampered.items():
        assert f"/{name}" in notices[_label_key(run, label)]
    after = json.loads((run / "results.json").read_text())["cells"]
    strip = ("seconds", "peak_rss_mb", "history")  # measured, not computed
    assert [{k: v for k, v in c.items() if k not in strip} for c in after] == \
        [{k: v for k, v in c.items() if k not in strip} for c in before]
    for key, data in pristine.items():  # recomputed, not loaded: the same weights as before
        assert (run / "cells" / key / "weights.safetensors").read_bytes() == data
    assert _cli(capsys, "verify", str(run))[0] == 0


def test_the_cli_says_which_cell_it_recomputes(finished, run, capsys):
    key = _label_key(run, "epsilon=inf")
    _flip(run / "cells" / key / "weights.safetensors")
    code, _, err = _cli(capsys, "suite", str(finished[0]), "--out", str(run), "--quiet")
    assert code == 0, err
    assert (f"cell epsilon=inf: cells/{key}/weights.safetensors differs from its manifest hash: "
            "it was edited or corrupted; recomputing it instead of loading it") in err


def test_a_manifest_cannot_point_outside_the_run_folder(run, capsys):
    key = _keys(run)[0]
    cell_manifest = run / "cells" / key / MANIFEST_FILE
    entries = json.loads(cell_manifest.read_text())
    entries["files"]["../../../../etc/passwd"] = {"sha256": "0" * 64, "bytes": 1}
    cell_manifest.write_text(json.dumps(entries))
    code, out, _ = _cli(capsys, "verify", str(run))
    assert code == 1 and "would leave the folder" in out
    with pytest.raises(PrivbenchError, match="does not verify"):
        from privbench.run.runner import load_run

        load_run(run)
