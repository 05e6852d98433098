"""Fuzzing the spec loader: random TOML values for every field (right types, wrong types, odd
keys, sweeps) either load or raise the project's SpecError, one line per problem; never another
exception, never a traceback."""

from __future__ import annotations

import datetime as dt
import math
import string
import typing
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from privbench.errors import SpecError
from privbench.spec.schema import SuiteSpec
from privbench.spec.suite import Suite, load_suite


def _leaves(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Every leaf field of the suite schema, dotted path -> annotation."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_leaves(ann, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = ann
    return out


FIELDS = _leaves(SuiteSpec)
TABLES = sorted({p.rsplit(".", 1)[0] for p in FIELDS if "." in p})

text = st.text(max_size=12)
names = st.one_of(st.text(alphabet=string.ascii_lowercase + "_.", min_size=1, max_size=10),
                  st.text(min_size=1, max_size=6))  # any character, a newline or a quote too
scalars = st.one_of(
    text,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-3, max_value=120),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=2),
    st.booleans(),
    st.dates(),
    st.sampled_from(["0.1", "1", "8", "1e-5", "inf", "true", "digits", "[32]", ""]),  # quoted
    st.integers(min_value=0, max_value=50).map(float),  # 5.0 where an integer is expected
)
toml_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                     st.dictionaries(text, inner, max_size=3)), max_leaves=6)


def _typed(ann: Any) -> st.SearchStrategy:
    """Values of the type a field expects (often outside its allowed range)."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann is bool:
        return st.booleans()
    if ann is int:
        return st.integers(min_value=-2, max_value=200)
    if ann is float:
        return st.one_of(st.floats(min_value=-1, max_value=50), st.sampled_from(
            [0.0, 1.0, math.inf, -math.inf, math.nan, 1e-300, 1e300]))
    if ann is str:
        return text
    if origin is typing.Literal:
        return st.one_of(st.sampled_from(args), text)
    if origin is list:
        return st.lists(_typed(args[0]) if args else toml_values, max_size=4)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return st.one_of(*[_typed(a) for a in args if a is not type(None)])
    return toml_values


@st.composite
def raw_suites(draw) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for path in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=6, unique=True)):
        value = draw(st.one_of(_typed(FIELDS[path]), toml_values))
        _set(raw, path, value)
    if draw(st.booleans()):  # an unknown key in a known table, or at the top
        table = draw(st.sampled_from(["", *TABLES]))
        _set(raw, f"{table}.{draw(names)}" if table else draw(names), draw(toml_values))
    if draw(st.booleans()):
        sweep = {}
        for path in draw(st.lists(st.one_of(st.sampled_from(sorted(FIELDS)), names),
                                  min_size=1, max_size=2, unique=True)):
            sweep[path] = draw(st.one_of(st.lists(_typed(FIELDS.get(path, Any)), max_size=3),
                                         toml_values))
        raw["sweep"] = sweep
    return raw


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return
        node = child
    node[leaf] = value


def _fits(ann: Any, value: Any) -> bool:
    """Whether a TOML value has the type a field expects (the range aside)."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann in (bool, str):
        return type(value) is ann
    if origin is typing.Literal:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list) and all(_fits(args[0], v) for v in value)
    if args and type(None) in args:
        return any(_fits(a, value) for a in args if a is not type(None))
    return True


def _wrong_types(raw: dict[str, Any], prefix: str = "") -> list[str]:
    """The leaf fields of `raw` given a value of the wrong type."""
    out = []
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if path in FIELDS and path != "sweep" and not _fits(FIELDS[path], value):
            out.append(path)
        elif isinstance(value, dict) and path in TABLES:
            out += _wrong_types(value, f"{path}.")
    return out


def toml(value: Any) -> str:
    """A value as TOML (inline tables and arrays), exactly as tomllib will read it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return '"' + "".join(
            "\\\\" if c == "\\" else '\\"' if c == '"'
            else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c
            for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml(str(k))} = {toml(v)}" for k, v in value.items()) + "}"


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=raw_suites())
def test_the_spec_loader_loads_or_gives_one_line_errors(tmp_path: Path, raw: dict[str, Any]):
    path = tmp_path / "fuzz.toml"
    path.write_text("\n".join(f"{toml(str(k))} = {toml(v)}" for k, v in raw.items()) + "\n",
                    encoding="utf-8")
    wrong = _wrong_types(raw)
    try:
        suite = load_suite(str(path))
    except SpecError as e:
        assert e.problems, raw
        for line in e.lines():
            assert line.startswith("fuzz.toml: ") and "\n" not in line and "\r" not in line, line
            assert len(line) < 2000, line
        for field in wrong:  # a value of the wrong type is refused, naming its field
            assert any(line.startswith(f"fuzz.toml: {field}") for line in e.lines()), (field, e)
        return
    assert not wrong, f"{wrong} loaded with a value of the wrong type: {raw}"
    assert isinstance(suite, Suite) and suite.cells
