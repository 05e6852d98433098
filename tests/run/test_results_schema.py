"""results.json follows the JSON Schema shipped in the package."""

from __future__ import annotations

import copy

import jsonschema
import pytest

from privbench.errors import PrivbenchError
from privbench.run.results_schema import results_schema, validate_results


def test_results_json_validates_against_the_shipped_schema(quick_results):
    jsonschema.Draft202012Validator.check_schema(results_schema())
    validate_results(quick_results)


def test_a_broken_results_document_is_rejected_naming_the_place(quick_results):
    doc = copy.deepcopy(quick_results)
    doc["cells"][0]["metrics"][0]["value"] = "high"
    with pytest.raises(PrivbenchError, match=r"cells/0/metrics/0/value"):
        validate_results(doc)
    doc = copy.deepcopy(quick_results)
    doc["cells"][1]["claim"]["delta"] = 2
    with pytest.raises(PrivbenchError, match=r"cells/1/claim/delta"):
        validate_results(doc)
