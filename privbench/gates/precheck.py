"""The policy's checks before training: a spec the policy would fail is refused before any cell
starts (delta at most 1/n of its privacy units, epsilon caps, ...)."""

from __future__ import annotations

import math
from typing import Any

from privbench.data.registry import DATA_SETS
from privbench.gates.policy import Policy, PolicyError, format_number
from privbench.spec.schema import CellSpec


def privacy_units(spec: CellSpec) -> int:
    """n in "delta at most 1/n": the number of clients, or of training records for example DP.

    A text data set's units are counted from the text itself (generated messages with their
    canaries, or a folder's files), which loads in well under a second and trains nothing.
    """
    if DATA_SETS.get(spec.data.name).kind == "text":
        from privbench.data.text_clients import load_text_data

        data = load_text_data(spec.data, spec.lm, spec.seed)
        return data.n_clients if spec.privacy.unit == "client" else len(data.train_texts)
    if spec.privacy.unit == "client":
        return spec.data.clients
    from privbench.data.splits import data_shape  # a user's table or images: counted from the split

    return data_shape(spec.data).n_train


def check_spec(cells: list[Any], policy: Policy) -> list[str]:
    """Problems of a suite's cells against the policy, found before anything trains.

    Args:
        cells: the suite's cells (each with a `spec` and a `label`); policy: the loaded policy.
    Returns:
        One line per problem (epsilon above max_epsilon, delta above 1/n, a missing baseline run);
        empty when the suite may run.
    """
    problems = []
    for cell in cells:
        spec: CellSpec = cell.spec
        no_dp = math.isinf(spec.privacy.epsilon)
        if no_dp and policy.allow_no_dp_baseline:
            continue
        cap = policy.privacy.max_epsilon
        if cap is not None and spec.privacy.epsilon > cap:
            problems.append(
                f"cell {cell.label}: privacy.epsilon = {format_number(spec.privacy.epsilon)} "
                "is above "
                f"privacy.max_epsilon = {format_number(cap)} (gate max_epsilon, margin "
                f"{format_number(cap - spec.privacy.epsilon)}); lower privacy.epsilon"
                + ("" if not no_dp else " or set allow_no_dp_baseline = true in the policy"))
        if policy.privacy.delta_at_most_one_over_n and not no_dp:
            n = privacy_units(spec)
            if spec.privacy.delta > 1.0 / n:
                problems.append(
                    f"cell {cell.label}: privacy.delta = {format_number(spec.privacy.delta)} "
                    "is above "
                    f"1/n = {format_number(1.0 / n)} for n = {n} {spec.privacy.unit}s (gate "
                    f"delta_at_most_one_over_n); lower privacy.delta")
    if policy.utility.baseline is not None and not (policy.utility.baseline
                                                    / "results.json").exists():
        problems.append(f"utility.baseline = {str(policy.utility.baseline)!r}: no results.json "
                        "there; run the baseline suite first or fix the path")
    return problems


def refuse_if_broken(cells: list[Any], policy: Policy) -> None:
    """Raise PolicyError naming each broken gate, so nothing trains against the policy.

    Args:
        cells: the suite's cells; policy: the loaded policy.
    Raises:
        PolicyError: one line per problem `check_spec` found.
    """
    problems = check_spec(cells, policy)
    if problems:
        raise PolicyError(policy.source, problems)
