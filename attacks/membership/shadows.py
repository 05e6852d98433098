"""Shadow and reference models: K copies of the target's training run, trained as batched models.

Each shadow trains on the records its inclusion bits select, partitioned into clients as the
target's spec says, with the target's rounds, cohort sampling, local SGD, clip and executed noise
multiplier, from the target's initial weights: K independent runs of the trainer's own `train_runs`
(trainers/fedavg.py), every (shadow, sampled client) pair of a round one row of a single vmapped
call; the shadows sample, clip and noise through the trainer, never on their own. The K shadows
train in chunks of `CHUNK` (one batched model each, with its own streams), so a cell on the Ray
backend trains its chunks as Ray tasks and gets the local backend's shadows bit for bit.
Trained shadows are cached by content hash (safetensors + JSON manifest) and reused across cells.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, load_file, save, save_file
from torch import nn
from torch.func import functional_call, vmap

import privbench
from privbench.data.partition import ClientShard, partition
from privbench.models.adapter import ClassifierAdapter, Params
from privbench.rng import rng_streams
from privbench.spec.schema import DataSpec, TrainSpec
from privbench.trainers.client_data import from_shards
from privbench.trainers.privacy_plan import example_sampling
from privbench.trainers.runs import train_runs

CHUNK = 8  # shadows a batched model: the unit a Ray task trains (fixed: results never depend on
# the backend)


@dataclass(frozen=True)
class ShadowPlan:
    """Everything a shadow run depends on: the target's configuration as it executed."""

    data: DataSpec
    train: TrainSpec
    noise_multiplier: float  # 0 trains without DP
    clip: float | None
    seed: int
    example_level: bool = False  # DP-SGD inside the clients (the target's unit is 'example')

    def fingerprint(self, init: Params, x: np.ndarray, y: np.ndarray,
                    inclusion: np.ndarray) -> str:
        """Content hash of plan, initial weights, records and inclusion bits, and code version."""
        h = hashlib.sha256()
        h.update(json.dumps({"data": self.data.model_dump(), "train": self.train.model_dump(),
                             "z": self.noise_multiplier, "clip": self.clip, "seed": self.seed,
                             "example_level": self.example_level, "chunk": CHUNK,
                             "code": privbench.__version__}, sort_keys=True).encode())
        for name in sorted(init):
            h.update(name.encode())
            h.update(init[name].detach().contiguous().numpy().tobytes())
        for arr in (x, y, np.packbits(inclusion)):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:24]


def train_shadows(model: nn.Module, init: Params, x: np.ndarray, y: np.ndarray,
                  inclusion: np.ndarray, plan: ShadowPlan) -> Params:
    """Train K shadow models; returns their parameters stacked, each (K, ...).

    The shadows train in chunks of `CHUNK` (each chunk one batched model with its own streams,
    chunk 0 the target's), one after another here, or as Ray tasks when the cell runs on the
    Ray backend (privbench/backends/batches.py): the same shadows either way, bit for bit.
    """
    from privbench.backends.batches import map_batches

    k_models = inclusion.shape[0]
    shards: list[list[ClientShard]] = []  # each shadow's clients
    for k in range(k_models):
        chosen = np.flatnonzero(inclusion[k])
        shards.append([ClientShard(i, chosen[s.indices])
                       for i, s in enumerate(partition(plan.data, y[chosen], plan.seed + k))])
    sizes = [len(s.indices) for mine in shards for s in mine]
    # Example level: each shadow's clients run DP-SGD with the record rate and local steps the
    # target's plan derives from its client size (`example_sampling`), here from the shadows'.
    record_rate, local_steps = example_sampling(plan.train,
                                                float(np.mean(sizes)) if sizes else 1.0)
    items = [(c, [s for mine in shards[lo: lo + CHUNK] for s in mine], min(CHUNK, k_models - lo))
             for c, lo in enumerate(range(0, k_models, CHUNK))]
    parts = map_batches(_train_chunk, items, {
        "model": model, "init": init, "x": x, "y": y, "plan": plan,
        "record_rate": record_rate, "local_steps": local_steps})
    return {n: torch.cat([p[n] for p in parts]) for n in parts[0]}


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of chunk `chunk`'s streams: the target's for chunk 0, a SeedSequence child else."""
    return seed if chunk == 0 else int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])


def _train_chunk(chunk: int, shards: list[ClientShard], runs: int, *, model: nn.Module,
                 init: Params, x: np.ndarray, y: np.ndarray, plan: ShadowPlan,
                 record_rate: float, local_steps: int) -> Params:
    """One chunk of `runs` shadows (their clients run-major) as one batched model."""
    glob = {n: p.detach().unsqueeze(0).repeat(runs, *([1] * p.dim())) for n, p in init.items()}
    # Chunk 0 has the target's streams (rng_streams(seed)): one shadow given the target's
    # records and seed replays the target's run exactly, which the tests check.
    return train_runs(ClassifierAdapter(model), glob, from_shards(x, y, shards), plan.train,
                      runs=runs, clip=plan.clip,
                      noise_multiplier=lambda _r: plan.noise_multiplier,
                      gens=rng_streams(chunk_seed(plan.seed, chunk)), seed=plan.seed,
                      example_level=plan.example_level, local_steps=local_steps,
                      record_rate=record_rate)


def cached_shadows(cache_dir: Path | None, model: nn.Module, init: Params, x: np.ndarray,
                   y: np.ndarray, inclusion: np.ndarray, plan: ShadowPlan) -> Params:
    """Shadows from `cache_dir/<hash>.safetensors` when present, else trained and stored there
    (`cached_params`)."""
    key = plan.fingerprint(init, x, y, inclusion)
    manifest = {
        "fingerprint": key, "shadows": int(inclusion.shape[0]),
        "records": int(inclusion.shape[1]), "data": plan.data.model_dump(),
        "train": plan.train.model_dump(), "noise_multiplier": plan.noise_multiplier,
        "clip": plan.clip, "seed": plan.seed, "example_level": plan.example_level,
        "inclusion_sha256": hashlib.sha256(np.packbits(inclusion).tobytes()).hexdigest(),
    }
    return cached_params(cache_dir, key, manifest,
                         lambda: train_shadows(model, init, x, y, inclusion, plan))


def cached_params(cache_dir: Path | None, key: str, manifest: dict,
                  train: Callable[[], Params]) -> Params:
    """Stacked shadow parameters from `cache_dir/<key>.safetensors` when present, else
    `train()`'s, stored there with `manifest` beside them as `<key>.json`.

    A cache inside an encrypted run (`RUN/shadows`, privbench.run.sealed) is sealed with the run
    key: both files, named `shadows/<key>.*` inside the run folder.

    Args:
        cache_dir: the cache folder (None: always train, store nothing).
        key: the content hash of everything the shadows depend on.
        manifest: what the JSON file beside the weights records (its "shadows" entry, the
            number of models, also goes into the weights' metadata).
        train: trains the shadows when the cache has none.
    Returns:
        The shadows' parameters, each (K, ...).
    """
    if cache_dir is None:
        return train()
    from privbench.run import sealed

    run = Path(cache_dir).parent
    encrypted = sealed.run_encryption(run) is not None

    def put(path: Path, data: bytes) -> None:
        if encrypted:
            sealed.write_bytes(path, data, run_dir=run, name=f"shadows/{final_name(path)}")
        else:
            path.write_bytes(data)

    def final_name(path: Path) -> str:
        return weights.name if path.name.startswith(".") else path.name

    weights = cache_dir / f"{key}.safetensors"
    if weights.exists():
        if encrypted:
            return load(sealed.read_bytes(weights, run_dir=run, name=f"shadows/{weights.name}"))
        return load_file(str(weights))
    params = train()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(f".{key}.tmp-{os.getpid()}.safetensors")
    tensors = {n: p.contiguous() for n, p in params.items()}
    meta = {"shadows": str(manifest.get("shadows", "")), "fingerprint": key}
    if encrypted:
        put(tmp, save(tensors, metadata=meta))
    else:
        save_file(tensors, str(tmp), metadata=meta)
    put(cache_dir / f"{key}.json", json.dumps(manifest, indent=2, default=str).encode())
    os.replace(tmp, weights)  # the weights file appears last and whole
    return params


@torch.no_grad()
def batched_logits(model: nn.Module, stacked: Params, x: np.ndarray) -> np.ndarray:
    """Logits of every stacked model on every record: (K, N, C), one vmapped call."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    out = vmap(lambda p: functional_call(model, p, (xt,)))(stacked)
    return out.double().numpy()
