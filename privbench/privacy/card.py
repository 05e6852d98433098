"""The privacy card: the fields "How to DP-fy ML" (Ponomareva et al. 2023, section 5.3) asks a
DP model to state, generated from its Claim and spec only, so it cannot disagree with them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import privbench
from privbench.errors import PrivbenchError
from privbench.privacy.claim import Claim

CARD_FILE = "card.json"

ADJACENCY = {
    "add_or_remove_one": "add or remove one {unit}: the two data sets differ by the presence of "
                         "one {unit}'s data",
    "replace_one": "replace one {unit}: the two data sets differ in the data of one {unit}",
}
SAMPLING = {
    "poisson": "Poisson sampling: each {who} joins each {step} independently with probability "
               "{q:.4g}",
    "fixed_cohort": "sampling without replacement: a uniform cohort of fixed size each round "
                    "(rate {q:.4g})",
    "none": "no sampling amplification claimed",
}


def privacy_card(claim: Claim | dict[str, Any], spec: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The card of one trained model, as a JSON-ready dict.

    Args:
        claim: the Claim (or its stored dict); spec: the cell's spec, kept as "configuration".
    Returns:
        The card: setting, protected unit, adjacency, accountant, statement, epsilon/delta and
        mechanism; a short "no differential privacy" card when epsilon is inf.
    """
    c = claim if isinstance(claim, Claim) else Claim.model_validate(claim)
    if not c.is_private:
        return {"dp": False, "statement": "no differential privacy: trained without noise; "
                "nothing is guaranteed", "privbench_version": privbench.__version__,
                "configuration": spec or {}}
    who = "record" if c.unit == "example" else "client"
    unit = "example (one record)" if c.unit == "example" else "client (all of one user's data)"
    if c.unit == "example":
        setting = ("example-level DP-SGD: each client clips every example's gradient and adds "
                   "Gaussian noise to each step on its own device")
    elif c.setting == "local":
        setting = "local DP: each client clips and noises its own update before sending it"
    else:
        setting = "central DP: the server clips each client's update and noises their sum"
    return {
        "dp": True,
        "dp_setting": setting,
        "protected": f"each {unit}",
        "guarantee_against": c.guarantee_against,
        "trusted": c.trusted,
        "data_accesses_covered": "this one training run; hyper-parameter tuning, earlier runs "
                                 "and data-dependent choices outside the run are not covered",
        "released": c.released,
        "unit_of_privacy": c.unit,
        "adjacency": ADJACENCY[c.neighbouring].format(unit=who),
        "accountant": {
            "name": "PLD (dp_accounting)" if c.accountant == "pld" else "RDP (dp_accounting)",
            "pld_grid": c.pld_grid,
            "sampling": SAMPLING[c.sampling].format(
                who=who, q=c.sampling_rate, step="step" if c.unit == "example" else "round"),
            "assumptions": _assumptions(c),
        },
        "statement": f"({_num(c.epsilon)}, {c.delta:g})-DP for each {who}; RDP gives epsilon "
                     f"{_num(c.epsilon_rdp)} for the same event",
        "epsilon": c.epsilon, "delta": c.delta, "epsilon_rdp": c.epsilon_rdp,
        "target_epsilon": c.target_epsilon,
        "mechanism": {"noise_multiplier": c.noise_multiplier, "clip": c.clip,
                      "count_noise_multiplier": c.count_noise_multiplier,
                      "sampling_rate": c.sampling_rate, "steps": c.steps},
        "dp_event": c.dp_event,
        "notes": c.notes,
        "transparency": {"code": f"privbench {privbench.__version__}",
                         "configuration": spec or {}},
    }


def _assumptions(c: Claim) -> list[str]:
    out = [f"{c.steps} {'steps' if c.unit == 'example' else 'rounds'} of the Gaussian mechanism "
           "as recorded in dp_event; holds: the event is derived from what the trainer ran"]
    if c.sampling == "poisson":
        out.append("independent Poisson inclusion; holds: the trainer draws it so, and empty "
                   "batches still add noise")
    if c.sampling == "fixed_cohort":
        out.append("uniform fixed-size cohorts; holds: realised cohorts after dropouts are "
                   "accounted round by round")
    out.append("noise from torch's seeded generator: fine for research; a deployment needs a "
               "cryptographically secure source")
    return out


def format_card(card: dict[str, Any], title: str = "") -> str:
    """The card as indented text for the terminal.

    Args:
        card: a `privacy_card`; title: the heading's name (e.g. the cell's label).
    Returns:
        The card's lines; dp_event and configuration are only pointed at ("in card.json").
    """
    lines = [f"== privacy card: {title} ==" if title else "== privacy card =="]

    def walk(value: Any, indent: str) -> None:
        for key, v in value.items():
            if key in ("dp_event", "configuration"):
                lines.append(f"{indent}{key}: (in card.json)")
            elif isinstance(v, dict):
                lines.append(f"{indent}{key}:")
                walk(v, indent + "  ")
            elif isinstance(v, list):
                lines.append(f"{indent}{key}:")
                lines.extend(f"{indent}  - {item}" for item in v)
            else:
                lines.append(f"{indent}{key}: {_num(v) if isinstance(v, float) else v}")

    walk(card, "  ")
    return "\n".join(lines)


def _num(v: float) -> str:
    return "inf" if isinstance(v, float) and math.isinf(v) else f"{v:.4g}"


def print_cards(run_dir: Path) -> int:
    """`privbench card RUN_DIR`: print the card of each finished cell (or of one cell folder);
    in an encrypted run each card is opened with the run key (privbench.run.sealed)."""
    from privbench.run.sealed import read_json

    folders = [run_dir] if (run_dir / CARD_FILE).exists() else sorted(
        p.parent for p in (run_dir / "cells").glob(f"*/{CARD_FILE}"))
    if not folders:
        raise PrivbenchError(f"{run_dir}: no {CARD_FILE} found; give a run folder written by "
                             "`privbench suite` (or one of its cells/<key> folders)")
    for folder in folders:
        card = read_json(folder / CARD_FILE)
        result = folder / "result.json"
        label = read_json(result).get("label", folder.name) if result.exists() else folder.name
        print(format_card(card, f"{label} ({folder.name})"))
    return 0
