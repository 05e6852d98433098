"""Round checkpoints: parameters, iterates and random-generator states in one safetensors file,
with the loop's state as JSON in its metadata, replaced atomically, so that a run killed at any
moment resumes from its last finished round and ends with the same weights as an uninterrupted
run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

Params = dict[str, torch.Tensor]
TENSORS = "checkpoint.safetensors"


def save_checkpoint(folder: Path, *, params: Params, iterates: list[Params],
                    generators: dict[str, torch.Generator], state: dict[str, Any]) -> None:
    """Write one round's checkpoint as a single file (tensors plus state), atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"params.{n}": p.contiguous() for n, p in params.items()}
    tensors.update({f"iterate{r:05d}.{n}": p.contiguous()
                    for r, it in enumerate(iterates) for n, p in it.items()})
    tensors.update({f"generator.{k}": g.get_state() for k, g in generators.items()})
    tmp = folder / f".{TENSORS}.tmp"
    meta = {"state": json.dumps({**state, "n_iterates": len(iterates)}, sort_keys=True)}
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, folder / TENSORS)


def load_checkpoint(folder: Path, generators: dict[str, torch.Generator]
                    ) -> tuple[Params, list[Params], dict[str, Any]] | None:
    """(params, iterates, state) of the last checkpoint, restoring the generators; None if none."""
    path = folder / TENSORS
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        state = json.loads(f.metadata()["state"])
    tensors = load_file(str(path))
    params = {k[len("params."):]: v for k, v in tensors.items() if k.startswith("params.")}
    iterates: list[Params] = [{} for _ in range(state["n_iterates"])]
    for k, v in tensors.items():
        if k.startswith("iterate"):
            head, name = k.split(".", 1)
            iterates[int(head[len("iterate"):])][name] = v
    for k, g in generators.items():
        g.set_state(tensors[f"generator.{k}"])
    return params, iterates, state
