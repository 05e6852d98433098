"""Content-addressed run folders: SHA-256 manifests of every stored file, and their checks.

Each finished cell folder `cells/<key>/` holds `manifest.json`: the SHA-256 and size of every
other file in it (weights, iterates, claim, card, ledger, observations, rounds, result). The run
folder's own `manifest.json` holds the SHA-256 of each cell's manifest and of the run-level files
(`suite.json`, `results.sqlite`, `results.json`, `gates.json`, `index.html`) as they are written.
`check_run` recomputes every hash and names the first file that differs or is missing.

`run_digest` is the hash the audit trail logs: the run manifest without the files that
`privbench gate` rewrites (`gates.json`, `index.html`), so gating a run again does not break its
trail entry, while those files are still hashed in the manifest and checked by `check_run`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privbench.errors import PrivbenchError
from privbench.run.paths import inside

MANIFEST_FILE = "manifest.json"
CELL_FORMAT = "privbench-cell-manifest/1"
RUN_FORMAT = "privbench-run-manifest/1"
# Run-level files, in the order they are checked.
RUN_FILES = ("suite.json", "results.sqlite", "results.json", "gates.json", "index.html")
# Rewritten by `privbench gate`: hashed in the manifest, left out of the trail's digest.
DERIVED = ("gates.json", "index.html")
_CHUNK = 1 << 20


def file_hash(path: Path) -> str:
    """The SHA-256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class ManifestCheck:
    """The outcome of checking a folder against its manifest.

    `path` is the first file that differs or is missing, relative to the folder checked (the run
    folder for `check_run`); `reason` says how, in one line; `files` counts the files that matched.
    """

    files: int
    path: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether every file matched (no differing path)."""
        return self.path is None


def _entry(path: Path) -> dict[str, Any]:
    return {"sha256": file_hash(path), "bytes": path.stat().st_size}


def write_cell_manifest(folder: Path, key: str) -> str:
    """Hash every file of a finished cell folder into its `manifest.json`.

    Args:
        folder: the cell folder (written aside, before it is renamed into place).
        key: the cell's content hash.

    Returns:
        The SHA-256 of the manifest file, which the run manifest records.
    """
    files = {name: _entry(Path(folder) / name) for name in _stored(Path(folder))}
    path = Path(folder) / MANIFEST_FILE
    _write_atomic(path, {"format": CELL_FORMAT, "key": key, "files": files})
    return file_hash(path)


def _stored(folder: Path) -> list[str]:
    """Every file under a cell folder but its manifest, as sorted relative POSIX paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST_FILE)


def _read_json(path: Path, where: str) -> tuple[dict[str, Any] | None, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{where} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{where} is not readable JSON ({type(e).__name__}): it was edited or cut"
    if not isinstance(data, dict):
        return None, f"{where} is not a JSON object: it was edited"
    return data, ""


def _check_file(path: Path, where: str, expected: dict[str, Any]) -> str:
    """'' when the file matches its manifest entry, else one line saying how it differs."""
    if not path.is_file():
        return f"{where} is missing"
    size = path.stat().st_size
    want = expected.get("bytes")
    if isinstance(want, int) and size != want:
        how = "truncated or edited" if size < want else "edited"
        return f"{where} has {size} bytes, its manifest says {want}: it was {how}"
    if file_hash(path) != expected.get("sha256"):
        return f"{where} differs from its manifest hash: it was edited or corrupted"
    return ""


def check_cell(folder: Path, where: str | None = None) -> ManifestCheck:
    """Check a cell folder against its own manifest: every file listed, matching, none added.

    Args:
        folder: the cell folder `cells/<key>/`.
        where: how paths are named in the reason (default `cells/<key>`).

    Returns:
        The ManifestCheck; `path` is relative to `where`'s parent naming.
    """
    folder = Path(folder)
    where = where or f"cells/{folder.name}"
    if not folder.is_dir():
        return ManifestCheck(0, f"{where}/", f"{where}/ is missing: the cell was deleted")
    manifest, problem = _read_json(folder / MANIFEST_FILE, f"{where}/{MANIFEST_FILE}")
    if manifest is None:
        return ManifestCheck(0, f"{where}/{MANIFEST_FILE}", problem)
    files = manifest.get("files")
    if manifest.get("format") != CELL_FORMAT or not isinstance(files, dict):
        return ManifestCheck(0, f"{where}/{MANIFEST_FILE}",
                             f"{where}/{MANIFEST_FILE} is not a cell manifest: it was edited")
    for n, (name, expected) in enumerate(sorted(files.items())):
        rel = f"{where}/{name}"
        try:
            path = inside(folder, name)
        except PrivbenchError as e:
            return ManifestCheck(n, rel, str(e))
        problem = _check_file(path, rel, expected if isinstance(expected, dict) else {})
        if problem:
            return ManifestCheck(n, rel, problem)
    for extra in _stored(folder):
        if extra not in files:
            return ManifestCheck(len(files), f"{where}/{extra}",
                                 f"{where}/{extra} is not in the cell's manifest: it was added")
    return ManifestCheck(len(files))


def read_run_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The run folder's manifest, or None when it has none.

    Raises:
        PrivbenchError: the manifest exists but is not a run manifest (edited or cut short).
    """
    path = Path(run_dir) / MANIFEST_FILE
    if not path.exists():
        return None
    data, problem = _read_json(path, f"{run_dir}/{MANIFEST_FILE}")
    if data is None or data.get("format") != RUN_FORMAT or not isinstance(
            data.get("files"), dict) or not isinstance(data.get("cells"), dict):
        raise PrivbenchError(problem or f"{run_dir}/{MANIFEST_FILE} is not a run manifest: it "
                             "was edited; the run does not verify")
    return data


def record_run(run_dir: Path, *, files: tuple[str, ...] = (),
               cells: dict[str, str] | None = None, drop: tuple[str, ...] = (),
               only_cells: list[str] | None = None,
               encryption: dict[str, str] | None = None) -> dict[str, Any]:
    """Update the run manifest: hash `files` now, record `cells` ({key: manifest hash}).

    Args:
        run_dir: the run folder.
        files: run-level file names just written (hashed from disk now).
        cells: cells just stored, with the SHA-256 of their `manifest.json`.
        drop: run-level files removed (e.g. a stale gates.json).
        only_cells: when given, the manifest keeps only these cells (the run's own, at its end).
        encryption: the run's encryption record (privbench.run.sealed.encryption_record), set once
            when an encrypted run starts; every later write of the run is sealed.

    Returns:
        The manifest as written.
    """
    run_dir = Path(run_dir)
    manifest = read_run_manifest(run_dir) or {"format": RUN_FORMAT, "files": {}, "cells": {}}
    for name in files:
        manifest["files"][name] = _entry(run_dir / name)
    for name in drop:
        manifest["files"].pop(name, None)
    manifest["cells"].update(cells or {})
    if encryption is not None:
        manifest["encryption"] = encryption
    if only_cells is not None:
        manifest["cells"] = {k: manifest["cells"][k] for k in only_cells
                             if k in manifest["cells"]}
    _write_atomic(run_dir / MANIFEST_FILE, manifest)
    return manifest


def run_digest(manifest: dict[str, Any]) -> str:
    """The hash the audit trail logs (and the run's signature signs): its manifest without the
    derived files; an encrypted run's encryption record is part of it, so it cannot be dropped."""
    evidence = {"format": manifest["format"], "cells": manifest["cells"],
                "files": {k: v for k, v in manifest["files"].items() if k not in DERIVED}}
    if "encryption" in manifest:
        evidence["encryption"] = manifest["encryption"]
    return hashlib.sha256(_canonical(evidence)).hexdigest()


def check_cell_entry(run_dir: Path, key: str, recorded: str | None) -> ManifestCheck:
    """Check one cell: its files against its manifest, and that manifest against the hash the
    run manifest recorded for it (when it recorded one).

    Args:
        run_dir: the run folder; key: the cell's content hash (kept inside `run_dir/cells`);
        recorded: the hash the run manifest holds for the cell's manifest (None: not checked).
    Returns:
        The ManifestCheck of the cell's folder.
    """
    folder = inside(Path(run_dir) / "cells", key)
    check = check_cell(folder)
    if check.ok and recorded is not None and file_hash(folder / MANIFEST_FILE) != recorded:
        rel = f"cells/{key}/{MANIFEST_FILE}"
        return ManifestCheck(check.files, rel, f"{rel} differs from the hash the run manifest "
                             "recorded: the cell's manifest was rewritten")
    return check


def check_run(run_dir: Path, *, include_cells: bool = True) -> ManifestCheck:
    """Recompute every hash of a run folder and name the first file that differs or is missing.

    Args:
        run_dir: the run folder.
        include_cells: also check every cell the manifest records; a resume checks the run-level
            files only, and each cell itself, so that it recomputes a bad cell instead.

    Returns:
        The ManifestCheck; `path` is relative to the run folder.
    """
    run_dir = Path(run_dir)
    try:
        manifest = read_run_manifest(run_dir)
    except PrivbenchError as e:
        return ManifestCheck(0, MANIFEST_FILE, str(e))
    if manifest is None:
        return ManifestCheck(0, MANIFEST_FILE, f"{MANIFEST_FILE} is missing: not a run folder "
                             "written by privbench, or written before runs had manifests")
    n = 0
    for name in [f for f in RUN_FILES if f in manifest["files"]] + sorted(
                set(manifest["files"]) - set(RUN_FILES)):
        try:
            path = inside(run_dir, name)
        except PrivbenchError as e:
            return ManifestCheck(n, name, str(e))
        expected = manifest["files"][name]
        problem = _check_file(path, name, expected if isinstance(expected, dict) else {})
        if problem:
            return ManifestCheck(n, name, problem)
        n += 1
    if not include_cells:
        return ManifestCheck(n)
    for key, recorded in manifest["cells"].items():
        try:
            check = check_cell_entry(run_dir, key, recorded)
        except PrivbenchError as e:
            return ManifestCheck(n, f"cells/{key}", str(e))
        if not check.ok:
            return ManifestCheck(n + check.files, check.path, check.reason)
        n += check.files + 1
    return ManifestCheck(n)
