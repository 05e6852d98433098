"""Round checkpoints that cost the same at round 1,000 as at round 1: each round appends its
global model as one safetensors file (`iterates/NNNNN.safetensors`) and its history record as one
JSON line (`history.jsonl`), then replaces one small safetensors file holding the parameters, the
random-generator states and the loop's state as JSON (its metadata). That file is the commit
point: a run killed at any moment resumes from its last finished round, reads the iterates and
history that round's checkpoint counts (later ones are overwritten), and ends with the same
weights as an uninterrupted run. No pickle: safetensors and JSON only.

In an encrypted run (a work folder `RUN/work/<key>` of a run whose manifest records encryption,
privbench.run.sealed) every file is sealed with the run key, named by its path inside the run
folder:
the tensor files whole, `history.jsonl` line by line (privbench.run.sealed.LineSealer), so a round
still appends one line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load, load_file, save, save_file

from privbench.models.adapter import Params
from privbench.run import sealed

TENSORS = "checkpoint.safetensors"
RECORDED = "recorded"  # the rounds the inversion attacks read, one file each
ITERATES = "iterates"
HISTORY = "history.jsonl"


@dataclass
class Resumed:
    """What a checkpoint restores: parameters, every iterate so far, the history records and
    the loop's state (the generators are restored in place)."""

    params: Params
    iterates: list[Params]
    history: list[dict[str, Any]]
    state: dict[str, Any]
    recorded: dict[str, dict] = field(default_factory=dict)  # rounds kept for inversion


class RoundCheckpoint:
    """The checkpoint of one training run in `folder`, appended round by round.

    Args:
        folder: the run's work folder (created on the first save).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        run = self.folder.parent.parent if self.folder.parent.name == "work" else None
        enc = sealed.run_encryption(run) if run is not None else None
        # (run folder, key) when the run is encrypted: every file below is sealed
        self._sealed = (run, sealed.run_key_for(run, enc)) if enc is not None else None
        self._lines = sealed.work_line_sealer(self.folder / HISTORY)
        self._iterates = 0  # iterates already on disk
        self._history = 0  # history records already on disk
        self._history_bytes = 0

    def save(self, *, params: Params, iterates: list[Params], history: list[dict[str, Any]],
             generators: dict[str, torch.Generator], state: dict[str, Any],
             recorded: dict[str, dict] | None = None) -> None:
        """Append the iterates and history records not yet written, then commit the round.

        Args:
            params: the parameters to continue from.
            iterates: every round's global model so far (only new ones are written).
            history: every round's record so far (only new ones are written).
            generators: the random streams, saved with their states.
            state: the loop's JSON state (round, clip, ...).
            recorded: the rounds the inversion attacks read (`attacks.inversion.rounds`): each
                round's starting model, per-client updates, aggregate and cohort; a round is
                written once, so a resumed run scores the same rounds as an uninterrupted one.
        """
        for round_no in sorted((recorded or {}).get("round_params", {})):
            path = self.folder / RECORDED / f"{round_no:05d}.safetensors"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tensors, meta = recorded_round(recorded, round_no)
                self._write_tensors(tensors, path, meta)
        (self.folder / ITERATES).mkdir(parents=True, exist_ok=True)
        for r in range(self._iterates, len(iterates)):  # counted only once committed below
            self._write_tensors({n: p.contiguous() for n, p in iterates[r].items()},
                                self.folder / ITERATES / f"{r + 1:05d}.safetensors")
        self._iterates = len(iterates)
        lines = "".join((json.dumps(h) if self._lines is None
                         else self._lines.seal_line(json.dumps(h), i)) + "\n"
                        for i, h in enumerate(history[self._history:], start=self._history))
        with open(self.folder / HISTORY, "ab") as f:
            f.seek(self._history_bytes)
            f.truncate()
            f.write(lines.encode())
            self._history_bytes = f.tell()
        self._history = len(history)
        tensors = {f"params.{n}": p.contiguous() for n, p in params.items()}
        tensors.update({f"generator.{k}": g.get_state() for k, g in generators.items()})
        meta = {"state": json.dumps({**state, "n_iterates": self._iterates,
                                     "n_history": self._history,
                                     "history_bytes": self._history_bytes}, sort_keys=True)}
        if self._sealed is None:
            _save_atomic(tensors, self.folder / TENSORS, meta)
        else:
            tmp = self.folder / f".{TENSORS}.tmp"
            self._write_tensors(tensors, tmp, meta, name=TENSORS)
            os.replace(tmp, self.folder / TENSORS)

    def load(self, generators: dict[str, torch.Generator]) -> Resumed | None:
        """The last committed round (restoring the generators), or None if there is none."""
        path = self.folder / TENSORS
        if not path.exists():
            return None
        if self._sealed is None:
            with safe_open(str(path), framework="pt") as f:
                state = json.loads(f.metadata()["state"])
            tensors = load_file(str(path))
        else:
            raw = self._read(path)
            state = json.loads(_metadata(raw)["state"])
            tensors = load(raw)
        params = {k[len("params."):]: v for k, v in tensors.items() if k.startswith("params.")}
        for k, g in generators.items():
            g.set_state(tensors[f"generator.{k}"])
        n_iterates, n_history = state.pop("n_iterates"), state.pop("n_history")
        self._history_bytes = state.pop("history_bytes")
        iterates = [self._read_tensors(self.folder / ITERATES / f"{r + 1:05d}.safetensors")
                    for r in range(n_iterates)]
        with open(self.folder / HISTORY, "rb") as f:
            text = f.read(self._history_bytes).decode()
        history = [json.loads(line if self._lines is None else self._lines.open_line(line, i))
                   for i, line in enumerate(text.splitlines())]
        if len(history) != n_history:
            raise ValueError(f"{self.folder / HISTORY} holds {len(history)} rounds, its "
                             f"checkpoint {n_history}: remove {self.folder} to start again")
        self._iterates, self._history = n_iterates, n_history
        recorded: dict[str, dict] = {}
        for path in sorted((self.folder / RECORDED).glob("*.safetensors")):
            raw = path.read_bytes() if self._sealed is None else self._read(path)
            restore_recorded_round(recorded, int(path.stem), load(raw), _metadata(raw))
        return Resumed(params, iterates, history, state, recorded)

    def _name(self, path: Path) -> str:
        """`path`'s name inside the run folder (what a sealed file is bound to)."""
        return Path(path).relative_to(self._sealed[0]).as_posix()

    def _write_tensors(self, tensors: Params, path: Path, metadata: dict[str, str] | None = None,
                       name: str | None = None) -> None:
        if self._sealed is None:
            save_file(tensors, str(path), metadata=metadata)
            return
        where = self._name(path.with_name(name) if name else path)
        sealed.write_bytes(path, save(tensors, metadata=metadata), run_dir=self._sealed[0],
                           name=where)

    def _read(self, path: Path) -> bytes:
        return sealed.read_bytes(path, run_dir=self._sealed[0], name=self._name(path))

    def _read_tensors(self, path: Path) -> Params:
        return load_file(str(path)) if self._sealed is None else load(self._read(path))


def _metadata(raw: bytes) -> dict[str, str]:
    """The `__metadata__` of safetensors bytes (its JSON header)."""
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]).get("__metadata__", {})


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata or None)
    os.replace(tmp, path)


def recorded_round(recorded: dict[str, dict], round_no: int) -> tuple[Params, dict[str, str]]:
    """One recorded round as safetensors tensors and metadata (the cohort as JSON).

    Args:
        recorded: the trainer's recorded rounds; round_no: the round to store.
    Returns:
        ({"round_params|name", "client_updates|client|name", "aggregates|name": tensor},
        {"cohort": JSON}).
    """
    tensors = {f"round_params|{n}": t.contiguous()
               for n, t in recorded["round_params"][round_no].items()}
    for c, update in recorded.get("client_updates", {}).get(round_no, {}).items():
        tensors.update({f"client_updates|{c}|{n}": t.contiguous() for n, t in update.items()})
    tensors.update({f"aggregates|{n}": t.contiguous()
                    for n, t in recorded.get("aggregates", {}).get(round_no, {}).items()})
    cohort = recorded.get("cohorts", {}).get(round_no)
    return tensors, {"cohort": json.dumps(cohort)}


def restore_recorded_round(recorded: dict[str, dict], round_no: int, tensors: Params,
                           meta: dict[str, str]) -> None:
    """Put one round read back by `recorded_round` into `recorded` (the trainer's layout).

    Args:
        recorded: the trainer's recorded rounds (changed in place); round_no: the round;
        tensors, meta: what `recorded_round` stored.
    """
    for key, t in tensors.items():
        kind, _, rest = key.partition("|")
        if kind == "client_updates":
            client, _, name = rest.partition("|")
            updates = recorded.setdefault(kind, {}).setdefault(round_no, {})
            updates.setdefault(int(client), {})[name] = t
        else:
            recorded.setdefault(kind, {}).setdefault(round_no, {})[rest] = t
    cohort = json.loads(meta.get("cohort", "null"))
    if cohort is not None:
        recorded.setdefault("cohorts", {})[round_no] = cohort
