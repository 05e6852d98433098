"""Loading a suite: TOML files, `--set` overrides, validation, and pydantic's errors as one line
each (the field path, the bad value and what is allowed)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import tomllib
from pydantic import (
    BaseModel,
    ValidationError,
)

from privbench.errors import SpecError
from privbench.spec.base import show_value
from privbench.spec.checks import consistency_problems
from privbench.spec.schema import SuiteSpec

# ---------------------------------------------------------------------------------------------
# Loading and overrides


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a one-line SpecError."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SpecError(str(path), ["file not found; give a built-in suite name or a TOML path"]
                        ) from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(str(path), [f"not valid TOML: {e}"]) from None


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `a.b=value`; the value is read as a TOML value, else taken as a plain string."""
    if "=" not in text:
        raise SpecError("--set", [f"{text!r}: expected FIELD=VALUE, e.g. privacy.epsilon=4"])
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise SpecError("--set", [f"{text!r}: the field path before '=' is empty"])
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each `--set a.b=value` applied.

    Setting a field that the sweep varies pins it: the field leaves the sweep.
    `--set sweep.privacy.epsilon=[1,2]` replaces that sweep axis.
    """
    out = copy.deepcopy(raw)
    for text in overrides:
        key, value = parse_override(text)
        if key.startswith("sweep."):
            out.setdefault("sweep", {})[key[len("sweep.") :]] = value
            continue
        set_path(out, key, value)
        sweep = out.get("sweep")
        if isinstance(sweep, dict):
            sweep.pop(key, None)
    return out


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `tree[a][b] = value` for `dotted = "a.b"`, creating tables on the way."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def validate_suite(raw: dict[str, Any], source: str) -> SuiteSpec:
    """Validate a suite's raw TOML data; raise SpecError with one line per problem."""
    try:
        spec = SuiteSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(source, format_validation_error(e)) from None
    problems = consistency_problems(spec)
    if problems:
        raise SpecError(source, problems)
    return spec


def format_validation_error(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per pydantic error: `path = value: what is allowed`."""
    lines = []
    for err in error.errors():
        path = prefix + ".".join(shown_key(p) for p in err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = ".".join(str(p) for p in err["loc"][:-1])
            allowed = _allowed_keys(parent)
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{path}: unknown key{hint}")
            continue
        msg = err["msg"]
        if msg.startswith("Input should be "):
            msg = "must be " + msg[len("Input should be ") :]
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if path == "privacy.epsilon" and kind in ("greater_than", "float_parsing", "float_type"):
            msg += " (use inf to train without DP)"
        value = err.get("input")
        floaty = kind.endswith("_type") and isinstance(value, float)
        shown = repr(value) if floaty else show_value(value)
        lines.append(f"{path} = {shown}: {msg}")
    return lines


def shown_key(part: Any) -> str:
    """A key (or dotted path) as it appears in a message: as is when it is a plain name, else
    quoted, so that a key holding a newline or a quote cannot break the one-line message."""
    text = str(part)
    return text if re.fullmatch(r"[\w@.+-]+", text) else repr(text)


def _allowed_keys(parent: str) -> list[str]:
    model: type[BaseModel] = SuiteSpec
    for part in [p for p in parent.split(".") if p]:
        field = model.model_fields.get(part)
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)
