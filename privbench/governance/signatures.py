"""A run folder's signatures: the run manifest and gates.json, signed with the run's Ed25519 key.

`RUN/signatures.json` (plaintext, outside the manifest it signs) holds the signer's public key,
the signature of the run's digest (privbench.run.manifest.run_digest: every cell manifest and
run-level file but the derived gates.json and index.html, so it covers every stored byte), and
the signature of gates.json's SHA-256 bound to that digest, so a verdict cannot be moved to
another run. `privbench verify --public-key PUB RUN_DIR` checks both with the public key only;
an encrypted run verifies without its run key, since the manifests hash the stored bytes.

Written at the end of `privbench suite --signing-key` and re-signed by `privbench gate
--signing-key`; a run or gate without a signing key removes signatures that would be stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from privbench.errors import PrivbenchError
from privbench.governance.crypto import fingerprint, public_key_text, sign, signature_ok
from privbench.run.manifest import file_hash, read_run_manifest, run_digest

SIGNATURES_FILE = "signatures.json"
FORMAT = "privbench-signatures/1"


def _run_message(digest: str) -> bytes:
    return b"privbench-run/1\n" + digest.encode("ascii")


def _gates_message(digest: str, gates_sha256: str) -> bytes:
    return b"privbench-gates/1\n" + digest.encode("ascii") + b"\n" + gates_sha256.encode("ascii")


def sign_run(run_dir: Path, key: Any) -> None:
    """Sign the run manifest (and gates.json when present) into signatures.json.

    Args:
        run_dir: a finished run folder.
        key: an Ed25519 private key, or None: remove a signatures.json the run made stale.
    """
    path = Path(run_dir) / SIGNATURES_FILE
    manifest = read_run_manifest(run_dir)
    if key is None or manifest is None:
        path.unlink(missing_ok=True)
        return
    digest = run_digest(manifest)
    doc: dict[str, Any] = {"format": FORMAT, "public_key": public_key_text(key.public_key()),
                           "run_digest": digest, "run_signature": sign(key, _run_message(digest))}
    gates = Path(run_dir) / "gates.json"
    if gates.is_file():
        h = file_hash(gates)
        doc["gates"] = {"sha256": h, "signature": sign(key, _gates_message(digest, h))}
    tmp = path.with_name(f".{SIGNATURES_FILE}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def resign_gates(run_dir: Path, key: Any) -> None:
    """After `privbench gate` rewrote gates.json: sign it with `key`, or, without a key, drop
    the gates signature (it would be stale) and keep the run's.

    Args:
        run_dir: the run folder; key: the Ed25519 signing key, or None.
    """
    path = Path(run_dir) / SIGNATURES_FILE
    if key is not None:
        sign_run(run_dir, key)
    elif path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # left for `verify` to name
        if isinstance(doc, dict) and doc.pop("gates", None) is not None:
            path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def check_signatures(run_dir: Path, public_key: str | None) -> str:
    """'' when the run's signatures hold, else one line naming what fails.

    Args:
        run_dir: the run folder (its manifests already checked against the files).
        public_key: the expected signer (base64); None checks a signatures.json, if any,
            against the key it names (self-consistency only).
    """
    path = Path(run_dir) / SIGNATURES_FILE
    if not path.is_file():
        return (f"{run_dir}/{SIGNATURES_FILE} is missing: the run is not signed"
                if public_key is not None else "")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{run_dir}/{SIGNATURES_FILE} is not readable JSON: it was edited"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not all(
            isinstance(doc.get(k), str) for k in ("public_key", "run_digest", "run_signature")):
        return f"{run_dir}/{SIGNATURES_FILE} is not a signatures file: it was edited"
    signer = doc["public_key"]
    if public_key is not None and signer != public_key:
        return (f"{run_dir}/{SIGNATURES_FILE}: the run is signed by key {fingerprint(signer)}, "
                f"not the given public key {fingerprint(public_key)}")
    try:
        manifest = read_run_manifest(run_dir)
    except PrivbenchError as e:
        return str(e)
    digest = run_digest(manifest) if manifest is not None else ""
    if digest != doc["run_digest"] or not signature_ok(signer, _run_message(digest),
                                                       doc["run_signature"]):
        return (f"{run_dir}/manifest.json does not match the run's signature: the run's files "
                "or manifest were changed after it was signed")
    gates = Path(run_dir) / "gates.json"
    signed = doc.get("gates")
    if not gates.is_file():
        return ""
    if not isinstance(signed, dict):
        return (f"{run_dir}/gates.json is not signed (signatures.json has no gates signature): "
                "gate the run again with --signing-key")
    h = file_hash(gates)
    if h != signed.get("sha256") or not signature_ok(signer, _gates_message(digest, h),
                                                     str(signed.get("signature", ""))):
        return f"{run_dir}/gates.json does not match its signature: the verdict was edited"
    return ""


def signer(run_dir: Path) -> str | None:
    """The fingerprint of the key that signed the run, or None when it is not signed."""
    path = Path(run_dir) / SIGNATURES_FILE
    try:
        return fingerprint(json.loads(path.read_text(encoding="utf-8"))["public_key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
