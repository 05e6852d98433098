"""Onboarding checks: a client's declared device profile against what the model needs.

Before a client joins the population, its profile (privbench.governance.consent: memory, compute,
library
versions, the hash of the model it runs) is held against the model's needs: the memory of one
trained row (privbench/spec/limits.py's terms: the model plus ROW_COPIES copies of its trainable
parameters, plus per-example gradients under example-level DP-SGD), the time one round of local
training takes at the declared speed, the libraries a client needs to load and train the model's
safetensors, and the model's architecture hash. A client that fails a check is refused with the
reason; refused clients are outside the population (privbench.governance.population), so the
accounted
per-client sampling rate of everyone else does not change.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from packaging.version import InvalidVersion, Version

from privbench.spec.limits import BYTES, ROW_COPIES

# The oldest library versions a client may run (pyproject's lower bounds); torch must also share
# the server's major version.
MIN_VERSIONS = {"torch": "2.3", "safetensors": "0.4"}
# FLOPs per trainable parameter per record per epoch of local training (forward + backward).
FLOPS_PER_PARAM_RECORD = 6


@dataclass(frozen=True)
class ModelNeeds:
    """What a client must bring to train the cell's model.

    Attributes:
        memory_bytes: peak memory of one client's local training.
        round_flops: floating-point operations of one round of local training (largest shard).
        max_round_seconds: how long a round may take on the client (clients.max_round_seconds).
        model_hash: the architecture hash clients must declare (see `model_hash`).
        server_torch: the server's torch version (clients must share its major version).
    """

    memory_bytes: float
    round_flops: float
    max_round_seconds: float
    model_hash: str
    server_torch: str = torch.__version__


def model_hash(params: dict[str, torch.Tensor]) -> str:
    """The model's architecture hash: SHA-256 of each trainable parameter's name, shape and
    dtype, in order. A client running another build of the model (another width, layer order or
    precision) declares another hash and is refused."""
    h = hashlib.sha256(b"privbench-model/1\0")
    for name, p in params.items():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}\n".encode())
    return h.hexdigest()


def model_needs(params: dict[str, torch.Tensor], total_params: int, *, records: int,
                epochs: int, batch_size: int, example_dp: bool,
                max_round_seconds: float) -> ModelNeeds:
    """The needs of a model with trainable `params` (and `total_params` in all).

    Args:
        params: the trainable parameters (the adapter's `init_params()`).
        total_params: every parameter of the model, frozen ones included.
        records: the largest client's record count; epochs, batch_size: the local plan.
        example_dp: example-level DP-SGD (per-example gradients of a batch are held at once).
        max_round_seconds: the longest a round of local training may take.
    """
    trainable = sum(p.numel() for p in params.values())
    memory = total_params * BYTES + ROW_COPIES * trainable * BYTES
    if example_dp:
        memory += batch_size * trainable * BYTES
    flops = float(FLOPS_PER_PARAM_RECORD * trainable * records * epochs)
    return ModelNeeds(memory, flops, max_round_seconds, model_hash(params))


def refusal(profile: dict[str, Any] | None, needs: ModelNeeds) -> str | None:
    """Why a client with this device profile cannot join, or None when it can.

    Args:
        profile: the declared profile (memory_mb, flops_per_second, libraries, model_hash).
        needs: the model's needs.
    Returns:
        One line naming the first failed check and the figures, or None.
    """
    if not profile:
        return "no device profile declared (`privbench clients device`)"
    memory = _number(profile.get("memory_mb"))
    if memory is None:
        return "device.memory_mb missing or not a number"
    if memory * 2**20 < needs.memory_bytes:
        return (f"memory {memory:g} MB < {needs.memory_bytes / 2**20:.3g} MB needed to train "
                "the model")
    speed = _number(profile.get("flops_per_second"))
    if speed is None or speed <= 0:
        return "device.flops_per_second missing or not a positive number"
    seconds = needs.round_flops / speed
    if seconds > needs.max_round_seconds:
        return (f"compute: a round of local training takes ~{seconds:.3g} s at {speed:.3g} "
                f"FLOP/s, over clients.max_round_seconds = {needs.max_round_seconds:g}")
    libraries = profile.get("libraries") or {}
    for lib, minimum in MIN_VERSIONS.items():
        declared = libraries.get(lib)
        if declared is None:
            return f"library {lib} not declared (needs >= {minimum})"
        try:
            version = Version(str(declared))
        except InvalidVersion:
            return f"library {lib} = {declared!r}: not a version"
        if version < Version(minimum):
            return f"library {lib} {declared} < {minimum}"
        if lib == "torch" and version.major != Version(needs.server_torch).major:
            return f"library torch {declared}: the server runs torch {needs.server_torch}"
    if profile.get("model_hash") != needs.model_hash:
        return (f"model hash {str(profile.get('model_hash'))[:12]!r} is not the model's "
                f"{needs.model_hash[:12]!r} (another build of the model)")
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        return None
    return float(value)
