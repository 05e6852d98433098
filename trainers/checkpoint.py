"""Round checkpoints: parameters, iterates and random-generator states in safetensors, the rest in
JSON, written atomically so that a crashed run resumes from its last finished round and ends
with the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

Params = dict[str, torch.Tensor]
TENSORS = "checkpoint.safetensors"
STATE = "checkpoint.json"


def save_checkpoint(folder: Path, *, params: Params, iterates: list[Params],
                    generators: dict[str, torch.Generator], state: dict[str, Any]) -> None:
    """Write one round's checkpoint; the JSON (written last) names the round it belongs to."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"params.{n}": p.contiguous() for n, p in params.items()}
    tensors.update({f"iterate{r:05d}.{n}": p.contiguous()
                    for r, it in enumerate(iterates) for n, p in it.items()})
    tensors.update({f"generator.{k}": g.get_state() for k, g in generators.items()})
    tmp = folder / f".{TENSORS}.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, folder / TENSORS)
    tmp_state = folder / f".{STATE}.tmp"
    tmp_state.write_text(json.dumps({**state, "n_iterates": len(iterates)}, sort_keys=True))
    os.replace(tmp_state, folder / STATE)


def load_checkpoint(folder: Path, generators: dict[str, torch.Generator]
                    ) -> tuple[Params, list[Params], dict[str, Any]] | None:
    """(params, iterates, state) of the last checkpoint, restoring the generators; None if none."""
    if not (folder / STATE).exists() or not (folder / TENSORS).exists():
        return None
    state = json.loads((folder / STATE).read_text())
    tensors = load_file(str(folder / TENSORS))
    params = {k[len("params."):]: v for k, v in tensors.items() if k.startswith("params.")}
    iterates: list[Params] = [{} for _ in range(state["n_iterates"])]
    for k, v in tensors.items():
        if k.startswith("iterate"):
            head, name = k.split(".", 1)
            iterates[int(head[len("iterate"):])][name] = v
    for k, g in generators.items():
        g.set_state(tensors[f"generator.{k}"])
    return params, iterates, state
