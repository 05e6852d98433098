"""Small federated runs and every record they leave (weights, iterates, history, claim,
rounds.jsonl, ledger), for the tests that pin what a run produces across speed-ups and resumes.

`python tests/round_records.py [NAME ...]` writes (those scenarios of)
`tests/recorded/round_records.json`, the figures that the
identity test compares against. They were recorded from the code before the round-cost work
(issue 22), so a later run must reproduce them exactly (epsilon figures to the accountant's
stated precision), except the weights and iterates.

Weights and iterates are kept as a fingerprint per tensor (its sum, its norm and four seeded
random projections, each scaled by 1/sqrt(size)), compared to 1e-5. Float training is not
bit-identical across CPUs: BLAS and vectorised kernels differ by ISA (AVX2, AVX-512, AMX), and
the same code and seed on two x86 machines differ by about 1e-7 relative after a run. A change of
the noise, the sampling or a random stream's order moves a fingerprint by orders of magnitude
more. (The first version kept a SHA-256 of the bytes; it failed on every machine but the one
that wrote it. The fingerprints were written with `python tests/round_records.py --fingerprints`
by code whose claim, ledger and rounds.jsonl equal the old code's exactly, and whose weight
hashes equalled the old code's on the machine that recorded them.)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from privbench.data.partition import partition
from privbench.data.splits import load_split
from privbench.models import build_model
from privbench.privacy.budget_monitor import BudgetMonitor
from privbench.run.results import json_safe
from privbench.spec.schema import CellSpec
from privbench.trainers import tabular_inputs, train_fedavg

GOLDEN = Path(__file__).parent / "recorded" / "round_records.json"
BASE: dict[str, Any] = {"seed": 5, "data": {"clients": 20}, "model": {"hidden": [8]},
                        "train": {"rounds": 6, "cohort": 5, "batch_size": 8}}
# name -> overrides of BASE: each private setting, the budget stop, adaptive clipping with a
# noise schedule, and no DP.
SCENARIOS: dict[str, dict[str, Any]] = {
    "central": {"privacy": {"epsilon": 4.0}},
    "central_budget_stop": {"privacy": {"epsilon": 4.0, "max_epsilon": 3.0}},
    "central_adaptive_schedule": {"privacy": {"epsilon": 6.0, "adaptive_clip": True,
                                              "noise_schedule": [2.0, 1.0]}},
    "example": {"privacy": {"epsilon": 6.0, "unit": "example"},
                "train": {"rounds": 4}},
    "example_eps4": {"privacy": {"epsilon": 4.0, "unit": "example"},
                     "train": {"rounds": 4}},
    "local_replace_one": {"privacy": {"epsilon": 8.0, "setting": "local",
                                      "neighbouring": "replace_one"}},
    "no_dp": {"privacy": {"epsilon": "inf"}},
}


def spec_of(name: str, **train: Any) -> CellSpec:
    """The cell spec of scenario `name` (with `train` fields overridden)."""
    data: dict[str, Any] = json.loads(json.dumps(BASE))
    for table, values in SCENARIOS[name].items():
        data.setdefault(table, {}).update(values)
    data["train"].update(train)
    if data["privacy"].get("epsilon") == "inf":
        data["privacy"]["epsilon"] = float("inf")
    return CellSpec.model_validate(data)


def run(spec: CellSpec, folder: Path, on_round: Callable[[int, int], None] | None = None
        ) -> dict[str, Any]:
    """Train `spec` as a cell does (round monitor, work folder) and return its records."""
    data = load_split(spec.data, spec.seed)
    shards = partition(spec.data, data.y_train, spec.seed)
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, data.n_features, data.n_classes, spec.seed)
    rounds_path = folder / "rounds.jsonl"
    monitor = BudgetMonitor(rounds_path, spec)
    trained = train_fedavg(*tabular_inputs(model, data, shards), spec.train, spec.privacy,
                           spec.seed, on_round=on_round, work_dir=folder / "work",
                           on_record=monitor)
    ledger = folder / "work" / "ledger.jsonl"
    return {
        "weights": _digest([trained.observations.final_params]),
        "iterates": _digest(trained.observations.iterates),
        "history": json_safe(trained.history),
        "claim": trained.claim.model_dump(mode="json"),
        "rounds_jsonl": rounds_path.read_text(),
        "ledger_jsonl": ledger.read_text() if ledger.exists() else "",
    }


FINGERPRINT_PROJECTIONS = 4


def _digest(params: list[dict[str, torch.Tensor]]) -> list[float]:
    """Per tensor: sum, norm and seeded random projections, each over sqrt(size) (see top)."""
    out: list[float] = []
    for p in params:
        for t in p.values():
            flat = t.detach().double().flatten()
            gen = torch.Generator().manual_seed(flat.numel())
            proj = torch.randn(FINGERPRINT_PROJECTIONS, flat.numel(), generator=gen,
                               dtype=torch.float64)
            scale = flat.numel() ** 0.5
            out += [float(flat.sum()) / scale, float(flat.norm()) / scale,
                    *(proj @ flat / scale).tolist()]
    return out


if __name__ == "__main__":
    import tempfile

    out: dict[str, Any] = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    only_fingerprints = "--fingerprints" in sys.argv  # keep every other recorded figure
    names = [a for a in sys.argv[1:] if not a.startswith("--")] or SCENARIOS
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            got = run(spec_of(name), Path(tmp) / name)
            if only_fingerprints:
                out[name].update(weights=got["weights"], iterates=got["iterates"])
            else:
                out[name] = got
            print(name, out[name]["claim"]["epsilon"], file=sys.stderr)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
