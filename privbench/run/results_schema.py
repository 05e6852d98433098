"""The JSON Schema of results.json, shipped in the package, and validation against it."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from privbench.errors import PrivbenchError


def results_schema() -> dict[str, Any]:
    """The schema (draft 2020-12) that every results.json follows."""
    return json.loads(files("privbench").joinpath("schemas/results.schema.json").read_text())


def validate_results(document: dict[str, Any]) -> None:
    """Raise PrivbenchError naming the first place where `document` breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(results_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise PrivbenchError(f"results.json at {where}: {error.message}")
