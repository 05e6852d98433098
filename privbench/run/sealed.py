"""The one reader and writer of a run folder's files: sealed (AEAD) when the run is encrypted.

A run is encrypted when its run manifest says so (`"encryption": {"aead", "key_id"}`, written
by `privbench suite --encrypt` before anything else). Then every file a run stores (weights,
iterates, claim, card, ledger, observations, rounds, results, suite.json, index.html) is written
sealed with the run key (privbench.governance.crypto) and the file's path inside the run folder as
its
associated data; reading one needs the key, and a plaintext file where a sealed one belongs is
refused. What stays plaintext, by design: the manifests (the SHA-256 of the *stored* bytes, so
`privbench verify` checks an encrypted run without the key), `gates.json` (thresholds, measured
figures and the verdict, so someone with only the public key can read and check a signed
verdict), `signatures.json` and the audit trail.

A path names its run folder: `RUN/<file>` or `RUN/cells/<key>/<file>`; a caller writing aside
(a cell folder before it is renamed into place) passes the run folder and final name itself.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from privbench.governance.crypto import (
    AEAD_NAME,
    RunKey,
    SealError,
    active_run_key,
    is_sealed,
    seal,
    unseal,
)
from privbench.run.manifest import read_run_manifest

# Written plaintext even in an encrypted run (see the module docstring).
PLAINTEXT = ("manifest.json", "gates.json", "signatures.json", ".lock")


def locate(path: Path) -> tuple[Path, str]:
    """(run folder, path inside it) of a run file: `RUN/x` or `RUN/cells/<key>/x`."""
    path = Path(path)
    if path.parent.parent.name == "cells":
        return path.parents[2], f"cells/{path.parent.name}/{path.name}"
    return path.parent, path.name


def run_encryption(run_dir: Path) -> dict[str, Any] | None:
    """The run's encryption record ({"aead", "key_id"}), or None for a plaintext run."""
    manifest = read_run_manifest(run_dir)
    enc = manifest.get("encryption") if manifest else None
    return enc if isinstance(enc, dict) else None


def encryption_record(key: RunKey) -> dict[str, str]:
    """What the run manifest records for a run sealed with `key`."""
    return {"aead": AEAD_NAME, "key_id": key.key_id}


def run_key_for(run_dir: Path, enc: dict[str, Any], what: str = "") -> RunKey:
    """This process's run key, checked against the run's; refuse in one line without it.

    Args:
        run_dir: the run folder; enc: its encryption record (key_id); what: the command, named
            in the refusal.
    Raises:
        SealError: no key, or a key with another id.
    """
    key = active_run_key()
    who = f"{what}: " if what else ""
    if key is None:
        raise SealError(f"{who}{run_dir} is encrypted (key {enc.get('key_id')}): give its key "
                        "with --key-file FILE or $PRIVBENCH_KEY")
    if key.key_id != enc.get("key_id"):
        raise SealError(f"{who}{run_dir} is encrypted with key {enc.get('key_id')}, not the "
                        f"given key {key.key_id}: give the run's key")
    return key


def _target(path: Path, run_dir: Path | None, name: str | None) -> tuple[Path, str]:
    where_dir, where_name = locate(path)
    return (Path(run_dir) if run_dir is not None else where_dir), name or where_name


def _sealing_key(run_dir: Path, name: str) -> RunKey | None:
    """The key to seal `name` with, or None when it is written plaintext."""
    enc = run_encryption(run_dir) if Path(name).name not in PLAINTEXT else None
    return run_key_for(run_dir, enc) if enc is not None else None


def write_bytes(path: Path, data: bytes, *, run_dir: Path | None = None,
                name: str | None = None) -> None:
    """Write a run file, sealed when its run is encrypted.

    Args:
        path: where the bytes go.
        data: the plaintext.
        run_dir: the run folder (default: from `path`, see `locate`).
        name: the file's final path inside the run folder (default: from `path`).
    """
    run_dir, name = _target(path, run_dir, name)
    key = _sealing_key(run_dir, name)
    Path(path).write_bytes(seal(key, data, name) if key is not None else data)


def read_bytes(path: Path, *, run_dir: Path | None = None, name: str | None = None) -> bytes:
    """Read a run file, opening it when sealed.

    Args:
        path: the file; run_dir, name: the run folder and the file's path inside it, the sealed
            data's associated data (None: found from `path`).
    Raises:
        SealError: the file is sealed and there is no key, another key, or it fails
            authentication; or it is plaintext where the encrypted run expects a sealed file.
        OSError: the file cannot be read.
    """
    run_dir, name = _target(path, run_dir, name)
    data = Path(path).read_bytes()
    enc = run_encryption(run_dir) if Path(name).name not in PLAINTEXT else None
    if is_sealed(data):
        key = run_key_for(run_dir, enc) if enc is not None else active_run_key()
        return unseal(key, data, name, f"{run_dir}/{name}")
    if enc is not None:
        raise SealError(f"{run_dir}/{name} is not sealed, though the run is encrypted: it was "
                        "replaced")
    return data


def read_text(path: Path, **where: Any) -> str:
    """`read_bytes` decoded as UTF-8 (`where`: run_dir and name).

    Args:
        path: the file; where: run_dir and name, as in `read_bytes`.
    """
    return read_bytes(path, **where).decode("utf-8")


def write_text(path: Path, text: str, **where: Any) -> None:
    """`write_bytes` of UTF-8 text (a plaintext file is written as text, as before).

    Args:
        path: the file; text: its content; where: run_dir and name, as in `write_bytes`.
    """
    run_dir, name = _target(path, where.get("run_dir"), where.get("name"))
    key = _sealing_key(run_dir, name)
    if key is None:
        Path(path).write_text(text, encoding="utf-8")
    else:
        Path(path).write_bytes(seal(key, text.encode("utf-8"), name))


def read_json(path: Path, **where: Any) -> Any:
    """A run file's JSON (non-finite numbers are left as the strings json_safe wrote).

    Args:
        path: the file; where: run_dir and name, as in `read_bytes`.
    """
    return json.loads(read_text(path, **where))


def authenticate(run_dir: Path, names: list[str]) -> tuple[int, str]:
    """Open every sealed file among `names` (paths inside the run folder) with the key.

    Args:
        run_dir: the run folder; names: "/"-separated paths inside it (plaintext files and
            missing ones are skipped).
    Returns:
        (files opened, "" or the one-line reason the first bad one fails).
    """
    run_dir = Path(run_dir)
    n = 0
    for name in names:
        path = run_dir.joinpath(*name.split("/"))
        if Path(name).name in PLAINTEXT or not path.is_file():
            continue
        try:
            read_bytes(path, run_dir=run_dir, name=name)
        except SealError as e:
            return n, str(e)
        n += 1
    return n, ""


def authenticate_run(run_dir: Path) -> tuple[int, str]:
    """Open every sealed file its manifests list (run-level files, then each cell's).

    Returns:
        (files opened, "" or the one-line reason the first bad one fails).
    """
    run_dir = Path(run_dir)
    manifest = read_run_manifest(run_dir) or {"files": {}, "cells": {}}
    names = list(manifest["files"])
    for key in manifest["cells"]:
        cell = json.loads((run_dir / "cells" / key / "manifest.json").read_text())
        names += [f"cells/{key}/{name}" for name in cell.get("files", {})]
    return authenticate(run_dir, names)


class LineSealer:
    """Seals a JSON Lines file of a run line by line, so that it can still be appended to and
    cut back at a line boundary: each stored line is the base64 of one sealed record whose
    associated data is the file's name inside the run folder and the line's index (a line moved,
    dropped from the middle or swapped fails authentication).

    Args:
        run_dir: the run folder; name: the file's path inside it; key: the run key.
    """

    def __init__(self, run_dir: Path, name: str, key: RunKey) -> None:
        self.run_dir, self.name, self.key = Path(run_dir), name, key

    def seal_line(self, text: str, index: int) -> str:
        """The stored form of line `index` (no newline).

        Args:
            text: the line's plaintext; index: its 0-based line index (bound into the seal).
        """
        return base64.b64encode(seal(self.key, text.encode(), f"{self.name}#{index}")).decode()

    def open_line(self, line: str, index: int) -> str:
        """The plaintext of stored line `index`.

        Args:
            line: the stored base64 line; index: its 0-based line index.
        Raises:
            SealError: the line is not sealed or fails authentication (named, one line).
        """
        where = f"{self.run_dir}/{self.name} line {index + 1}"
        try:
            blob = base64.b64decode(line, validate=True)
        except ValueError:
            blob = b""
        if not is_sealed(blob):
            raise SealError(f"{where} is not sealed, though the run is encrypted: it was "
                            "replaced")
        return unseal(self.key, blob, f"{self.name}#{index}", where).decode()


def work_line_sealer(path: Path) -> LineSealer | None:
    """The line sealer of a JSON Lines file a cell appends to while it trains (in its work
    folder `RUN/work/<key>/x`, or its live rounds file `RUN/cells/.<key>.rounds.jsonl`) when
    its run is encrypted, else None (plaintext, as outside a run)."""
    path = Path(path)
    if path.parent.parent.name == "work":
        run = path.parents[2]
    elif path.parent.name == "cells" and path.name.startswith("."):
        run = path.parents[1]
    else:
        return None
    enc = run_encryption(run)
    if enc is None:
        return None
    return LineSealer(run, path.relative_to(run).as_posix(), run_key_for(run, enc))


def plaintext_lines(path: Path) -> bytes:
    """A JSON Lines file a cell appended to, as plaintext (opened line by line when sealed, see
    `work_line_sealer`; a last line a crash cut short is dropped then)."""
    data = Path(path).read_bytes()
    sealer = work_line_sealer(path)
    if sealer is None:
        return data
    lines = data.decode().splitlines()
    if data and not data.endswith(b"\n"):
        lines = lines[:-1]
    return "".join(sealer.open_line(t, i) + "\n" for i, t in enumerate(lines)).encode()
