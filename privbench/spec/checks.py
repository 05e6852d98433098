"""Cross-field checks of a cell spec, run before any cell starts: each problem one line naming
the field path, the bad value and the fix."""

from __future__ import annotations

import math
from pathlib import Path

from privbench.data.registry import DATA_SETS, names_of
from privbench.spec.attack_schema import AttacksSpec
from privbench.spec.audit_checks import audit_problems
from privbench.spec.base import show_value
from privbench.spec.schema import CellSpec, DataSpec, with_strongest_canary


def consistency_problems(spec: CellSpec) -> list[str]:
    """Cross-field checks that a single field's type cannot express."""
    spec = with_strongest_canary(spec)  # a suite's "auto", as each of its cells resolves it
    problems = []
    if spec.train.cohort > spec.data.clients:
        problems.append(
            f"train.cohort = {show_value(spec.train.cohort)}: must be at most data.clients "
            f"({spec.data.clients}); lower the cohort or raise the client count"
        )
    problems += _data_field_problems(spec.data)
    from privbench.data.stream_task import stream_problems  # data.name = "stream": cohort reads

    problems += stream_problems(spec)
    if spec.task != "tabular":  # every trainer option applies; data, model and scorers differ
        from privbench.governance.hooks import governance_problems
        from privbench.spec.lm_checks import lm_problems

        return (problems + lm_problems(spec) + privacy_problems(spec) + _secagg_problems(spec)
                + governance_problems(spec))
    if (DATA_SETS.get(spec.data.name).kind != "tabular" or spec.model.name == "tiny_gpt2"
            or spec.model.path):
        return [*problems, f"task = {spec.task!r}: takes data.name "
                f"{', '.join(names_of('tabular'))} and model.name mlp, cnn or factory without "
                "model.path; set task = \"causal_lm\" for text"]
    from privbench.data.splits import data_shape  # the data module imports this one
    from privbench.errors import PrivbenchError
    from privbench.models.zoo import spec_problems

    try:
        shape = data_shape(spec.data)  # a user's files: read once, checked, split
    except PrivbenchError as e:
        return [*problems, str(e)]
    if shape.clients is not None:
        problems += _named_clients_problems(spec.data, shape.clients)
    if model_problems := spec.model.problems() or spec_problems(spec.model, spec.data):
        return problems + model_problems
    from privbench.models.checks import design_problems

    problems += design_problems(spec, shape.n_features, shape.n_classes)
    inversion = spec.attacks.inversion
    if inversion.enabled and max(inversion.rounds) > spec.train.rounds:
        problems.append(
            f"attacks.inversion.rounds = {inversion.rounds}: every round must be at most "
            f"train.rounds ({spec.train.rounds}); drop the later rounds"
        )
    held = spec.data.test_fraction + spec.data.population_fraction
    n_train = shape.n_train
    if held < 0.9 and spec.data.clients > n_train:
        problems.append(
            f"data.clients = {spec.data.clients}: must be at most the {n_train} training records "
            f"of {shape.source}; lower data.clients"
        )
    problems += privacy_problems(spec)
    if held >= 0.9:
        problems.append(
            f"data.test_fraction + data.population_fraction = "
            f"{spec.data.test_fraction + spec.data.population_fraction:g}: must be below 0.9 "
            "so that records remain for training"
        )
    problems += _secagg_problems(spec)
    problems += audit_problems(spec)
    problems += _attack_problems(spec.attacks)
    from privbench.governance.hooks import governance_problems  # [governance] registry, personal

    problems += governance_problems(spec)
    return problems


# [data] fields that only some data sets read: (field, default, the data set that reads it).
_TABLES = ("table", "stream")
_FILE_FIELDS = (("format", "auto", _TABLES), ("label", "label", _TABLES),
                ("client", None, _TABLES), ("features", [], _TABLES),
                ("image_size", None, ("images",)))


def _data_field_problems(data: DataSpec) -> list[str]:
    """A user-file field set for a data set that does not read it, or a path for a built-in."""
    problems = [f"data.{name} = {show_value(getattr(data, name))}: only data.name = "
                f"{' or '.join(map(repr, readers))} reads it (data.name = {data.name!r}); drop "
                f"data.{name}" for name, default, readers in _FILE_FIELDS
                if getattr(data, name) != default and data.name not in readers]
    if data.path is not None and not DATA_SETS.get(data.name).path:
        problems.append(f"data.path = {data.path!r}: data.name = {data.name!r} is built in and "
                        "reads no file; set data.name = 'table' (CSV, Parquet), 'images' or "
                        "'jsonl', or drop data.path")
    return problems


def _named_clients_problems(data: DataSpec, n_clients: int) -> list[str]:
    """When the user's records name their clients, the spec's client count must agree."""
    column = f"column {data.client!r}" if data.client else "client folders"
    source = Path(data.path or "").name
    problems = []
    if data.clients != n_clients:
        problems.append(f"data.clients = {data.clients}: {source} names {n_clients} clients "
                        f"({column}); set data.clients = {n_clients}")
    if data.partition != "iid":
        problems.append(f"data.partition = {data.partition!r}: {source} names each record's "
                        f"client ({column}); drop data.partition")
    return problems


def _secagg_problems(spec: CellSpec) -> list[str]:
    """[secagg] checks: bits must fit the modulus; distributed DP needs a DP target."""
    sa, problems = spec.secagg, []
    if sa.bits >= sa.modulus_bits:
        problems.append(f"secagg.bits = {sa.bits}: must be below secagg.modulus_bits "
                        f"({sa.modulus_bits}) to leave room for the sum; lower secagg.bits")
    if sa.distributed_dp and math.isinf(spec.privacy.epsilon):
        problems.append("secagg.distributed_dp = true: needs a finite privacy.epsilon; "
                        "set privacy.epsilon or turn distributed_dp off")
    if sa.groups == 1:
        problems.append("secagg.groups = 1: use 0 for one level or at least 2 groups")
    if sa.enabled and (spec.privacy.unit != "client" or spec.privacy.setting != "central"
                       or spec.privacy.noise_schedule or spec.privacy.adaptive_clip):
        problems.append("secagg.enabled = true: secure aggregation sums client-level updates "
                        "under one noise level; use privacy.unit = 'client', setting = 'central', "
                        "no noise_schedule and no adaptive_clip")
    return problems


def privacy_problems(spec: CellSpec) -> list[str]:
    """Combinations of privacy and training fields that cannot be trained or accounted honestly."""
    p, t = spec.privacy, spec.train
    private = math.isfinite(p.epsilon)
    problems = []
    central_clients = private and p.unit == "client" and p.setting == "central"
    if central_clients and t.sampling == "shuffle":
        problems.append("train.sampling = 'shuffle': no accountant here gives client-level "
                        "central DP for shuffled cohorts; use 'poisson' or 'fixed_cohort'")
    if central_clients and t.sampling == "fixed_cohort" and p.neighbouring != "replace_one":
        problems.append("train.sampling = 'fixed_cohort': sampling without replacement is "
                        "accounted for privacy.neighbouring = 'replace_one' only; set it")
    if central_clients and t.sampling == "fixed_cohort" and t.cohort != int(t.cohort):
        problems.append(f"train.cohort = {show_value(t.cohort)}: a fixed cohort is a whole number "
                        "of clients")
    if p.adaptive_clip and not (private and p.unit == "client" and p.setting == "central"):
        problems.append("privacy.adaptive_clip = true: adaptive clipping is implemented for "
                        "client-level central DP only; set privacy.unit = 'client' and "
                        "privacy.setting = 'central'")
    if private and p.setting == "local" and p.neighbouring != "replace_one":
        problems.append("privacy.setting = 'local': a local guarantee is between any two data "
                        "sets of one client; set privacy.neighbouring = 'replace_one'")
    if p.unit == "example" and p.setting == "local":
        problems.append("privacy.setting = 'local': local DP is a client-level setting; "
                        "example-level DP-SGD already runs inside each client")
    return problems


def _attack_problems(attacks: AttacksSpec) -> list[str]:
    problems = []
    k = attacks.shadows.models
    if attacks.lira.enabled and k < 2:
        problems.append(f"attacks.shadows.models = {k}: LiRA needs at least 2 shadow models "
                        "(each record IN some and OUT of others); raise it, e.g. to 16")
    if attacks.rmia.enabled and attacks.rmia.references > k:
        problems.append(f"attacks.rmia.references = {attacks.rmia.references}: must be at most "
                        f"attacks.shadows.models ({k}); lower it or train more shadows")
    refs = attacks.rmia.references or k
    if attacks.rmia.enabled and attacks.rmia.mode == "offline" and refs < 2:
        problems.append(f"attacks.rmia.references = {refs}: offline RMIA needs at least 2 "
                        "reference models so every record has one trained without it")
    return problems
