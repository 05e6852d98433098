"""[governance] How a cell's spec turns into the trainer's governance hooks, checks and hash.

- `governance_problems`: the `[clients]` and `[personal]` tables checked before anything trains
  (one line naming the field and the fix each).
- `hashed_governance`: what of them enters a cell's content hash: nothing when unset (so runs
  without these features keep their keys), else the tables and the registry file's SHA-256 (an
  edited registry is a new cell, never a stale cached one).
- `governance_hooks`: the trainer's `population` hook (privbench.governance.population) and the
personal
  layers (privbench.governance.personal), and the privacy card's sections they add.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privbench.spec.schema import CellSpec, ClientsSpec, PersonalSpec


def governance_problems(spec: CellSpec) -> list[str]:
    """Problems of the [clients] and [personal] tables, one line each."""
    problems = []
    reg = spec.clients.registry
    if reg is not None:
        from privbench.governance.consent import RegistryError, load_registry

        try:
            load_registry(Path(reg))
        except RegistryError as e:
            problems.append(str(e))
    personal = spec.personal
    if personal.finetune_epochs and not personal.layers:
        problems.append(f"personal.finetune_epochs = {personal.finetune_epochs}: needs "
                        "personal.layers (the parameters each client fine-tunes), e.g. "
                        "[\"net.2\"]")
    if personal.layers:
        if spec.task != "tabular":
            problems.append("personal.layers: personal layers are implemented for task = "
                            "'tabular'; drop personal.layers")
        if math.isfinite(spec.privacy.epsilon) and spec.privacy.unit != "client":
            problems.append("personal.layers: personal layers need client-level updates; set "
                            "privacy.unit = 'client' or drop personal.layers")
        if spec.secagg.enabled or spec.audit.enabled:
            problems.append("personal.layers: not combined with secagg or the canary audit "
                            "yet; disable secagg.enabled and audit.enabled")
        if spec.task == "tabular" and not problems:
            problems += _unknown_layers(spec)
    return problems


def _unknown_layers(spec: CellSpec) -> list[str]:
    """Personal-layer prefixes that match no parameter of the model (or match all of them)."""
    from privbench.spec.limits import parameter_names

    names = parameter_names(spec)
    bad = [p for p in spec.personal.layers if not any(_under(n, p) for n in names)]
    if bad:
        return [f"personal.layers = {spec.personal.layers}: {bad[0]!r} names no parameter; "
                f"the model's parameters are {', '.join(names)}"]
    if all(any(_under(n, p) for p in spec.personal.layers) for n in names):
        return [f"personal.layers = {spec.personal.layers}: every parameter would be personal; "
                "leave some layers shared"]
    return []


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def personal_names(names: list[str], prefixes: list[str]) -> list[str]:
    """The parameter names under any of the personal-layer prefixes, in model order.

    Args:
        names: the model's parameter names; prefixes: the spec's personal.layers.
    """
    return [n for n in names if any(_under(n, p) for p in prefixes)]


def hashed_governance(spec: CellSpec) -> dict[str, Any]:
    """What of [clients] and [personal] enters the cell's content hash (nothing when unset)."""
    out: dict[str, Any] = {}
    if spec.clients != ClientsSpec():
        from privbench.governance.consent import registry_sha256

        reg = spec.clients.registry
        out["clients"] = {**spec.clients.model_dump(), "registry_sha256": (
            registry_sha256(Path(reg)) if reg is not None and Path(reg).is_file() else None)}
    if spec.personal != PersonalSpec():
        out["personal"] = spec.personal.model_dump()
    return out


@dataclass
class Governance:
    """A cell's governance: the trainer's keyword arguments and the personal layers.

    Attributes:
        trainer: {"population": Population} with a registry, {"personal": PersonalLayers} for
            FedPer (train_fedavg's hooks).
        layers: the personal layers (FedPer or fine-tuned heads), for scoring and the card.
    """

    trainer: dict[str, Any] = field(default_factory=dict)
    layers: Any = None

    def card(self, rounds_run: int) -> dict[str, Any]:
        """The privacy card's governance sections (empty when nothing is set)."""
        out: dict[str, Any] = {}
        if "population" in self.trainer:
            out["population"] = self.trainer["population"].card(rounds_run)
        if self.layers is not None:
            out["personal_layers"] = self.layers.card()
        return out


def governance_hooks(spec: CellSpec, task: Any) -> Governance:
    """A cell's governance hooks for its task; with personal layers the task's scorers gain
    the personal scorer (privbench.governance.personal_scorer).

    Args:
        spec: the cell's spec.
        task: its TaskRun (privbench.run.tasks): the adapter, client data and scorers.
    """
    gov = Governance()
    if spec.clients.registry is not None:
        gov.trainer["population"] = population_of(spec, task)
    if spec.personal.layers:
        from privbench.governance.personal import PersonalLayers
        from privbench.governance.personal_scorer import personal_scorer

        params = task.adapter.init_params()
        gov.layers = PersonalLayers(personal_names(list(params), spec.personal.layers), params,
                                    task.clients.n_clients, spec.personal.mode)
        if spec.personal.mode == "fedper":
            gov.trainer["personal"] = gov.layers
        task.scorers = [*task.scorers, personal_scorer(gov.layers, task)]
    return gov


def population_of(spec: CellSpec, task: Any) -> Any:
    """The cell's population: its registry's consenting clients that pass onboarding.

    Args:
        spec: the cell's spec (clients.registry, scope, onboarding); task: its TaskRun.
    Returns:
        The Population, its sampling set to the task's; without onboarding no device is checked.
    """
    from privbench.governance.onboarding import ModelNeeds, model_hash
    from privbench.governance.population import build_population

    c = spec.clients
    needs = needs_of(spec, task) if c.onboarding else ModelNeeds(  # no device checks
        0.0, 0.0, math.inf, model_hash(task.adapter.init_params()))
    population = build_population(Path(c.registry), spec.data.clients, needs, c.scope,
                                  check_devices=c.onboarding)
    population.sampling = task.train.sampling
    return population


def needs_of(spec: CellSpec, task: Any) -> Any:
    """The ModelNeeds (privbench.governance.onboarding) of a cell's model and local plan.

    Args:
        spec: the cell's spec (privacy unit, clients.max_round_seconds); task: its TaskRun.
    """
    from privbench.governance.onboarding import model_needs

    return model_needs(task.adapter.init_params(),
                       sum(p.numel() for p in task.adapter.module.parameters()),
                       records=int(task.clients.counts.max()), epochs=task.train.local_epochs,
                       batch_size=task.train.batch_size,
                       example_dp=(math.isfinite(spec.privacy.epsilon)
                                   and spec.privacy.unit == "example"),
                       max_round_seconds=spec.clients.max_round_seconds)


GOVERNANCE_SECTIONS = ("population", "personal_layers")


def report_card(run_dir: Path, cell: Any) -> dict[str, Any]:
    """A cell's privacy card for the report: the card of its Claim and spec, with the
    governance sections its stored card.json holds (population, personal layers).

    Args:
        run_dir: the run folder; cell: the cell's stored result (claim, spec, key).
    """
    from privbench.privacy.card import CARD_FILE, privacy_card
    from privbench.run.cell_paths import cell_dir, read_cell_file

    card = privacy_card(cell.claim, cell.spec)
    spec = cell.spec or {}
    governed = (spec.get("clients") or {}).get("registry") or (spec.get("personal") or {}).get(
        "layers")
    if not governed or not (cell_dir(Path(run_dir), cell.key) / CARD_FILE).exists():
        return card
    stored = json.loads(read_cell_file(Path(run_dir), cell.key, CARD_FILE))
    return {**card, **{k: stored[k] for k in GOVERNANCE_SECTIONS if k in stored}}
