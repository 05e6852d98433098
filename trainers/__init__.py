"""Trainers: the federated loop, client updates, aggregation and DP mechanisms.

`train_fedavg` and `tabular_inputs` load on first use, so that the light registries under this
package (trainers/mechanisms/) can be read, by the spec for one, without importing torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["tabular_inputs", "train_fedavg"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from privbench.trainers import fedavg

        return getattr(fedavg, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
