"""Encryption at rest and signatures: an encrypted run folder holds no plaintext weights or
text, opens with its key, refuses without it and names a tampered file; a signed run and trail
verify with the public key alone, and a forged entry is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_suite
from safetensors.torch import load

from privbench.cli.main import main
from privbench.errors import PrivbenchError
from privbench.governance.audit_trail import append_run, canonical, entry_hash, verify
from privbench.governance.crypto import (
    load_public_key,
    load_run_key,
    load_signing_key,
    use_key,
    write_key_pair,
    write_run_key,
)
from privbench.run.results import read_json
from privbench.run.runner import run_suite
from privbench.run.sealed import read_bytes
from privbench.spec.suite import load_suite

# One cell whose results hold training text: DAGER recovers the attacked batches' sentences.
SUITE = """
name = "governance"
seed = 1
[data]
name = "digits"
clients = 10
[model]
hidden = [8]
[train]
rounds = 2
cohort = 5
batch_size = 16
[privacy]
delta = 1e-5
epsilon = 8.0
[attacks.inversion]
enabled = true
rounds = [1]
clients = 2
image_attacks = ["analytic"]
text = true
text_batches = 2
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same suite run plaintext and encrypted (signed), each with its audit log beside it."""
    root = tmp_path_factory.mktemp("governance")
    keys = {"key": write_run_key(root / "run.key")}
    keys["sig"], keys["pub"] = write_key_pair(root / "signer")
    suite = load_suite(str(write_suite(root / "g.toml", SUITE)))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PRIVBENCH_AUDIT_LOG", raising=False)
        mp.delenv("PRIVBENCH_KEY", raising=False)
        run_suite(suite, root / "plain" / "run", workers=1)
        with use_key(load_run_key(keys["key"])):
            run_suite(suite, root / "sealed" / "run", workers=1, encrypt=True,
                      signing_key=load_signing_key(keys["sig"]))
    return {"plain": root / "plain" / "run", "sealed": root / "sealed" / "run", **keys}


@pytest.fixture
def sealed(runs, tmp_path, monkeypatch) -> Path:
    """A private copy of the encrypted run and its log (the entry names the copy)."""
    monkeypatch.delenv("PRIVBENCH_AUDIT_LOG", raising=False)
    monkeypatch.delenv("PRIVBENCH_KEY", raising=False)
    dest = tmp_path / "runs" / "run"
    shutil.copytree(runs["sealed"], dest)
    lines = (runs["sealed"].parent / "audit-trail.jsonl").read_text().splitlines()
    (dest.parent / "audit-trail.jsonl").write_text("\n".join(lines) + "\n")
    return dest


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _files(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def _key(run: Path) -> str:
    return next(p.name for p in (run / "cells").iterdir() if p.is_dir())


def _training_sentences(plain: Path) -> list[str]:
    result = json.loads((plain / "cells" / _key(plain) / "result.json").read_text())
    row = next(m for m in result["metrics"]
               if m["scorer"] == "inversion_dager" and m["metric"] == "exact_match")
    return [" ".join(p["original"][:-1]) for batch in row["details"]["examples"] for p in batch]


def _distinct_words(plain: Path) -> set[str]:
    return {w for s in _training_sentences(plain) for w in s.split() if len(w) >= 6}


def test_encrypted_run_holds_no_plaintext_weights_or_text_and_opens_with_its_key(runs):
    plain, sealed = runs["plain"], runs["sealed"]
    key = _key(plain)
    assert _key(sealed) == key
    weights = load((plain / "cells" / key / "weights.safetensors").read_bytes())
    iterates = load((plain / "cells" / key / "iterates.safetensors").read_bytes())
    secrets = [t.numpy().tobytes() for t in (*weights.values(), *iterates.values())]
    words = _distinct_words(plain)
    assert len(words) >= 3 and all(len(s) >= 32 for s in secrets)
    plain_bytes = b"".join(_files(plain).values())
    # The scan can fail: the plaintext run holds both the weights and the training text.
    assert all(s in plain_bytes for s in secrets)
    assert all(w.encode() in plain_bytes for w in words)
    for name, data in _files(sealed).items():
        assert not any(s in data for s in secrets), f"{name} holds plaintext weights"
        assert not any(w.encode() in data for w in words), f"{name} holds training text"
    with use_key(load_run_key(runs["key"])):
        opened = load(read_bytes(sealed / "cells" / key / "weights.safetensors"))
        results = read_json(sealed / "results.json")
    # Same spec and seed, same numbers: the sealed weights are the plaintext run's.
    assert opened.keys() == weights.keys()
    assert all(torch.equal(opened[k], weights[k]) for k in weights)
    figures = [(m["scorer"], m["metric"], m["value"]) for m in results["cells"][0]["metrics"]]
    assert figures == [(m["scorer"], m["metric"], m["value"])
                       for m in read_json(plain / "results.json")["cells"][0]["metrics"]]


def test_commands_open_an_encrypted_run_with_the_key_and_refuse_without_it(
        sealed, runs, tmp_path, capsys):
    policy = write_suite(tmp_path / "p.toml", "[privacy]\nmax_epsilon = 10.0\n")
    report = tmp_path / "report.html"
    for args in (("card", sealed), ("report", sealed, "--out", report),
                 ("gate", sealed, "--policy", policy), ("compare", sealed, sealed)):
        code, _, err = _cli(capsys, *args)
        assert code == 2, args
        assert len(err.strip().splitlines()) == 1 and "--key-file" in err, (args, err)
    other = write_run_key(tmp_path / "other.key")
    code, _, err = _cli(capsys, "card", sealed, "--key-file", other)
    assert code == 2 and "not the given key" in err
    key = runs["key"]
    code, out, _ = _cli(capsys, "card", sealed, "--key-file", key)
    assert code == 0 and "privacy card" in out and "central DP" in out
    code, _, _ = _cli(capsys, "gate", sealed, "--policy", policy, "--key-file", key,
                      "--signing-key", runs["sig"])
    assert code == 0
    code, out, _ = _cli(capsys, "verify", sealed, "--key-file", key)
    assert code == 0 and "sealed files authenticate with the key" in out
    code, _, _ = _cli(capsys, "report", sealed, "--out", report, "--key-file", key)
    assert code == 0 and "Scorecard" in report.read_text()
    # A resume needs the key too, and a plaintext run is never resumed encrypted.
    suite = load_suite(str(write_suite(tmp_path / "g.toml", SUITE)))
    with pytest.raises(PrivbenchError, match="give its key"):
        run_suite(suite, sealed, workers=1)
    with use_key(load_run_key(key)), pytest.raises(PrivbenchError, match="plaintext run"):
        run_suite(suite, runs["plain"], workers=1, encrypt=True)
    with use_key(load_run_key(key)):  # with the key, the finished cell is loaded, not retrained
        again = run_suite(suite, sealed, workers=1)
    assert again.loaded == [_key(sealed)]
    assert (sealed / "results.json").read_bytes().startswith(b"PBSEAL1")


def test_a_flipped_or_moved_sealed_file_fails_authentication_and_is_named(sealed, runs, capsys):
    key = _key(sealed)
    card = sealed / "cells" / key / "card.json"
    original = card.read_bytes()
    data = bytearray(original)
    data[-5] ^= 0x01
    card.write_bytes(bytes(data))
    code, out, _ = _cli(capsys, "verify", sealed)
    assert code == 1 and f"cells/{key}/card.json differs from its manifest hash" in out
    code, _, err = _cli(capsys, "card", sealed, "--key-file", runs["key"])
    assert code == 2 and f"cells/{key}/card.json fails authentication" in err
    # A whole sealed file moved to another path (claim.json over card.json) fails too.
    card.write_bytes((sealed / "cells" / key / "claim.json").read_bytes())
    code, _, err = _cli(capsys, "card", sealed, "--key-file", runs["key"])
    assert code == 2 and f"cells/{key}/card.json fails authentication" in err
    # A plaintext file where a sealed one belongs is refused, not read.
    card.write_text(json.dumps({"dp": False}))
    code, _, err = _cli(capsys, "card", sealed, "--key-file", runs["key"])
    assert code == 2 and "is not sealed, though the run is encrypted" in err


def test_the_report_hides_private_text_unless_asked(runs, tmp_path, capsys):
    plain = runs["plain"]
    sentences = _training_sentences(plain)
    assert sentences
    html = (plain / "index.html").read_text()
    assert not any(s in html for s in sentences)
    assert "are not shown" in html and "--show-private-text" in html
    out = tmp_path / "private.html"
    shutil.copytree(plain, tmp_path / "runs" / "run")
    log = (plain.parent / "audit-trail.jsonl").read_text().splitlines()[-1]
    entry = json.loads(log)
    entry["run_dir"] = str((tmp_path / "runs" / "run").resolve())
    entry["hash"] = entry_hash(entry)
    (tmp_path / "runs" / "audit-trail.jsonl").write_text(canonical(entry) + "\n")
    code, _, err = _cli(capsys, "report", tmp_path / "runs" / "run", "--show-private-text",
                        "--out", out)
    assert code == 0, err
    assert all(s in out.read_text() for s in sentences)


def test_a_signed_run_and_gate_verify_with_the_public_key_only(sealed, runs, tmp_path, capsys):
    pub = runs["pub"]
    code, out, _ = _cli(capsys, "verify", sealed, "--public-key", pub)  # no run key given
    assert code == 0 and "(the given public key)" in out
    code, out, _ = _cli(capsys, "verify", sealed.parent / "audit-trail.jsonl", "--public-key", pub)
    assert code == 0 and "every entry signed by the given public key" in out
    _, stranger = write_key_pair(tmp_path / "stranger")
    code, out, _ = _cli(capsys, "verify", sealed, "--public-key", stranger)
    assert code == 1 and "not the given public key" in out
    policy = write_suite(tmp_path / "p.toml", "[privacy]\nmax_epsilon = 10.0\n")
    code, _, _ = _cli(capsys, "gate", sealed, "--policy", policy, "--key-file", runs["key"],
                      "--signing-key", runs["sig"])
    assert code == 0
    code, _, _ = _cli(capsys, "verify", sealed, "--public-key", pub)
    assert code == 0
    # Edit the verdict and re-hash it into the manifest: the signature still catches it.
    gates = json.loads((sealed / "gates.json").read_text())
    gates["verdict"] = "PASS"
    gates["results"][0]["measured"] = 0.0
    (sealed / "gates.json").write_text(json.dumps(gates))
    from privbench.run.manifest import record_run

    record_run(sealed, files=("gates.json",))
    code, out, _ = _cli(capsys, "verify", sealed, "--public-key", pub)
    assert code == 1 and "gates.json does not match its signature" in out


def _signed_log(tmp_path: Path, n: int, key) -> Path:
    log = tmp_path / "audit-trail.jsonl"
    results = tmp_path / "results.json"
    for i in range(n):
        results.write_text(json.dumps({"run": i}))
        append_run(log, suite=f"s{i}", run_dir=tmp_path / f"gone{i}", spec={"i": i},
                   data_fingerprints=[], results_path=results, manifest_hash=None,
                   signing_key=key)
    return log


def _rechain(entries: list[dict]) -> str:
    prev = "0" * 64
    for e in entries:
        e["prev_hash"] = prev
        e["hash"] = entry_hash(e)
        prev = e["hash"]
    return "".join(canonical(e) + "\n" for e in entries)


def test_a_forged_entry_is_named_even_when_the_chain_is_rebuilt(tmp_path):
    private, public = write_key_pair(tmp_path / "run")
    key, pub = load_signing_key(private), load_public_key(public)
    log = _signed_log(tmp_path, 3, key)
    assert verify(log, public_key=pub).ok
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    entries[1]["results_hash"] = "f" * 64  # the forger rebuilds every hash after the edit
    log.write_text(_rechain(entries))
    result = verify(log)
    assert result.bad_line == 2 and "does not match its signature" in result.reason
    # Re-signing with the forger's own key passes alone, not against the run's public key.
    from privbench.governance.crypto import public_key_text, sign

    forger, _ = write_key_pair(tmp_path / "forger")
    fkey = load_signing_key(forger)
    from privbench.governance.audit_trail import signed_message

    entries = [json.loads(line) for line in log.read_text().splitlines()]
    for e in entries[1:]:
        e["signer"] = public_key_text(fkey.public_key())
    text = _rechain(entries)
    entries = [json.loads(line) for line in text.splitlines()]
    for e in entries[1:]:
        e["signature"] = sign(fkey, signed_message(e["hash"]))
    log.write_text("".join(canonical(e) + "\n" for e in entries))
    assert verify(log).ok
    result = verify(log, public_key=pub)
    assert result.bad_line == 2 and "not the given public key" in result.reason


def test_keys_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PRIVBENCH_KEY", raising=False)
    suite = write_suite(tmp_path / "g.toml", SUITE)
    code, _, err = _cli(capsys, "suite", suite, "--out", tmp_path / "run", "--encrypt")
    assert code == 2 and err.startswith("--encrypt: no run key") and len(err.splitlines()) == 1
    (tmp_path / "bad.key").write_text("not a key")
    code, _, err = _cli(capsys, "suite", suite, "--out", tmp_path / "run", "--encrypt",
                        "--key-file", tmp_path / "bad.key")
    assert code == 2 and "not a privbench run key" in err
    code, _, err = _cli(capsys, "suite", suite, "--out", tmp_path / "run", "--signing-key",
                        tmp_path / "bad.key")
    assert code == 2 and "not an Ed25519 private key" in err
    assert not (tmp_path / "run").exists()
    write_run_key(tmp_path / "k")
    code, _, err = _cli(capsys, "keygen", "--encryption", tmp_path / "k")
    assert code == 2 and "never overwritten" in err
