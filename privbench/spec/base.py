"""The base of every spec table: unknown keys are errors, values are checked on assignment."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base for every spec table: unknown keys are errors, not silently ignored; values must have
    the TOML type the field expects (`lr = "0.1"` or `rounds = 5.0` are refused, not converted;
    an integer is accepted where a float is expected); inf and nan are refused except where a
    field says what inf means (privacy.epsilon, privacy.max_epsilon, train.max_update_norm)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True,
                              allow_inf_nan=False)


def show_value(value: Any) -> str:
    """A value as an error line shows it: inf, 0.5, 'name', [1, 2]."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (str, list, dict)):
        return repr(value)
    return str(value)

