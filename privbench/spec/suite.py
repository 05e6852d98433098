"""A suite: a validated spec, expanded by its `[sweep]` grid into cells keyed by content hash."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import privbench
from privbench.errors import SpecError
from privbench.spec.checks import consistency_problems
from privbench.spec.load import (
    apply_overrides,
    format_validation_error,
    read_toml,
    set_path,
    shown_key,
    validate_suite,
)
from privbench.spec.schema import CellSpec, SuiteSpec

DEFAULT_SUITE = "default"
# Fields that name or describe a suite but do not change what a cell computes.
_NOT_HASHED = ("name", "description")


@dataclass(frozen=True)
class Cell:
    """One experiment of a suite: a resolved spec and its content hash."""

    spec: CellSpec
    key: str
    axes: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Short human name: the swept values, or the suite name for a single cell."""
        if not self.axes:
            return self.spec.name
        return " · ".join(v if isinstance(v, str) else f"{k.split('.')[-1]}={_fmt(v)}"
                          for k, v in self.axes.items())


@dataclass(frozen=True)
class Suite:
    """A validated suite and its cells, in sweep order."""

    spec: SuiteSpec
    source: str
    cells: list[Cell]


def builtin_suites() -> dict[str, Path]:
    """Names and paths of the suites shipped in `privbench.suites`."""
    root = files("privbench.suites")
    return {
        Path(str(p)).stem: Path(str(p))
        for p in root.iterdir()
        if str(p).endswith(".toml")
    }


def resolve_suite_path(arg: str | None) -> Path:
    """A built-in suite name, or a path to a TOML file."""
    name = arg or DEFAULT_SUITE
    builtin = builtin_suites()
    if name in builtin:
        return builtin[name]
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        return path
    raise SpecError(
        name,
        [f"no built-in suite of that name; built-in: {', '.join(sorted(builtin))}, "
         "or give a path to a .toml file"],
    )


def load_suite(arg: str | None = None, overrides: list[str] | None = None,
               seed: int | None = None) -> Suite:
    """Read, override, validate and expand a suite named by `arg` (see resolve_suite_path)."""
    path = resolve_suite_path(arg)
    raw = resolve_relative_paths(read_toml(path), path.parent)
    if seed is not None:
        raw["seed"] = seed
    raw = apply_overrides(raw, overrides or [])
    source = path.name
    spec = validate_suite(raw, source)
    return Suite(spec=spec, source=source, cells=expand(spec, source))


# Fields naming a local file or folder: relative values in a suite file mean "beside the file".
PATH_FIELDS = (("data", "path"), ("model", "path"))


def resolve_relative_paths(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Make the suite file's relative `data.path` and `model.path` (and sweeps over them)
    absolute against the file's folder, so a suite runs the same from any working directory.

    Args:
        raw: the suite file's TOML tree (changed in place and returned).
        folder: the folder holding the suite file.

    Returns:
        `raw`, with those paths absolute. Command-line overrides are applied afterwards and stay
        relative to the working directory, as a shell user expects.
    """
    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str((folder / value).resolve())
        return value

    for table, key in PATH_FIELDS:
        section = raw.get(table)
        if isinstance(section, dict) and key in section:
            section[key] = absolute(section[key])
        sweep = raw.get("sweep")
        values = sweep.get(f"{table}.{key}") if isinstance(sweep, dict) else None
        if isinstance(values, list):
            sweep[f"{table}.{key}"] = [absolute(v) for v in values]
    return raw


def expand(spec: SuiteSpec, source: str) -> list[Cell]:
    """The cartesian product of the sweep axes; each combination is validated as a cell."""
    base = spec.model_dump(exclude={"sweep", "max_memory_gb"})
    axes = list(spec.sweep.items())
    for key, values in axes:
        if not _is_field_path(key):
            raise SpecError(source, [f"sweep.{shown_key(key)}: unknown field; a sweep key is a "
                                     "dotted field path such as privacy.epsilon"])
        if not values:
            raise SpecError(source, [f"sweep.{shown_key(key)} = []: must list at least one value"])
    cells, seen = [], set()
    for combo in itertools.product(*(values for _, values in axes)):
        raw = copy.deepcopy(base)
        chosen = dict(zip((k for k, _ in axes), combo, strict=True))
        for key, value in chosen.items():
            set_path(raw, key, value)
        try:
            cell_spec = CellSpec.model_validate(raw)
        except ValidationError as e:
            lines = format_validation_error(e)
            raise SpecError(source, [_sweep_blame(line, chosen, axes) for line in lines]) from None
        problems = consistency_problems(cell_spec)
        if problems:
            raise SpecError(source, [_sweep_blame(p, chosen, axes) for p in problems])
        key = content_hash(cell_spec)
        if key in seen:
            continue
        seen.add(key)
        cells.append(Cell(spec=cell_spec, key=key, axes=chosen))
    return cells


def content_hash(spec: CellSpec) -> str:
    """sha256 of the resolved spec (names excluded), the seed, the package version and, for a
    user's data (`data.path`), the data's content: the file's sha256, or the folder listing's
    (names, sizes, modification times), so an edited data file never reuses a cached cell."""
    from privbench.governance.hooks import hashed_governance  # [governance] only when set

    payload = {
        "spec": spec.model_dump(exclude=_unhashed(spec)),
        **hashed_governance(spec),
        **hashed_user_data(spec),
        "version": privbench.__version__,
    }
    text = json.dumps(payload, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# [data] fields of a user's files: a built-in data set reads none of them, so they stay out of
# its cells' hashes (which are what they were before these fields existed).
_USER_DATA_FIELDS = {"path", "format", "label", "client", "features", "image_size"}


def _unhashed(spec: CellSpec) -> dict[str, Any]:
    """The fields left out of the hash: names, the governance tables (hashed on their own), and a
    built-in data set's unread user-file fields."""
    from privbench.data.registry import DATA_SETS

    out: dict[str, Any] = {k: True for k in (*_NOT_HASHED, "clients", "personal")}
    if not DATA_SETS.get(spec.data.name).path:
        out["data"] = {k: True for k in _USER_DATA_FIELDS - {"path"}}
    return out


def hashed_user_data(spec: CellSpec) -> dict[str, Any]:
    """What of a user's data enters the cell's content hash: {"data_sha256": ...} when the data
    set reads `data.path` (table, images, jsonl), else nothing."""
    from privbench.data.registry import DATA_SETS
    from privbench.data.user_data import data_sha256

    if not (DATA_SETS.get(spec.data.name).path and spec.data.path):
        return {}
    return {"data_sha256": data_sha256(Path(spec.data.path))}


def _is_field_path(dotted: str) -> bool:
    model: Any = CellSpec
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        model = fields[part].annotation
    return True


def _sweep_blame(line: str, chosen: dict[str, Any], axes: list[tuple[str, list]]) -> str:
    for key, values in axes:
        if line.startswith(key + " ") or line.startswith(key + ":"):
            idx = next(i for i, v in enumerate(values) if v is chosen[key] or v == chosen[key])
            return f"sweep.{key}[{idx}]" + line[len(key):]
    return line


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:g}"
    return str(value)
