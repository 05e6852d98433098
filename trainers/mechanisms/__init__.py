"""The DP mechanisms of the federated loop, one file each, behind one interface (base.py).

In the style of Flower's DP strategy wrappers: a base mechanism (none, central client-level,
local, example-level DP-SGD, distributed DP under secure aggregation) owns one round's client
transform (what the sampled clients send: local training, and any clipping and noise done on a
client) and its server aggregation (clip, noise, mean); adaptive clipping and noise schedules
are wrappers around a base mechanism. `PrivacyPlan` (trainers/privacy_plan.py) calibrates the
noise and turns each executed round into the ledger's DP events.

This module is the registry. It imports nothing heavy (each entry names the module of its
implementation, loaded on first use), so the spec derives its allowed `privacy.setting` values
from it and `privbench list` shows it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from privbench.errors import PrivbenchError
from privbench.registry import Registry, load_object

if TYPE_CHECKING:
    from privbench.trainers.mechanisms.base import Mechanism


@dataclass(frozen=True)
class MechanismEntry:
    """One registered mechanism or wrapper.

    Attributes:
        name: its registry name (a base mechanism's is the plan's `mechanism`).
        description: one line for `privbench list`.
        kind: "mechanism" (a base mechanism) or "wrapper" (wraps one: adaptive clipping, ...).
        accounting: the PrivacyPlan family that accounts it ("none", "central", "local",
            "example"; wrappers: the families they wrap).
        unit: the privacy unit it protects (None: no DP).
        setting: the `privacy.setting` value that selects it (None: selected otherwise).
        secure_sum: it needs secure aggregation with noise added by the clients
            (`secagg.distributed_dp`).
        enabled_by: for a wrapper, the spec field that turns it on.
        implementation: "module:Class" of the implementation (privbench.trainers.mechanisms.*).
    """

    name: str
    description: str
    kind: Literal["mechanism", "wrapper"]
    accounting: str
    implementation: str
    unit: str | None = None
    setting: str | None = None
    secure_sum: bool = False
    enabled_by: str | None = None

    def load(self) -> type[Mechanism]:
        """The implementing class (its module is imported on first use)."""
        return load_object(f"{__name__}.{self.implementation}")


MECHANISMS: Registry[MechanismEntry] = Registry("privacy mechanism", "privacy.setting")
for _entry in (
    MechanismEntry("none", "no DP: FedAvg of the clients' updates", "mechanism", "none",
                   "none:NoDP"),
    MechanismEntry("central", "client-level DP-FedAvg: the server clips each update to C and "
                   "adds N(0, (zC)^2) to the sum (McMahan et al. 2018)", "mechanism", "central",
                   "central:CentralDP", unit="client", setting="central"),
    MechanismEntry("local", "client-level local DP: each client clips its update to C and adds "
                   "N(0, (zC)^2) before sending it", "mechanism", "local", "local:LocalDP",
                   unit="client", setting="local"),
    MechanismEntry("example", "example-level DP-SGD inside each client: Poisson batches, "
                   "per-example clipping, noise on every step (Abadi et al. 2016)", "mechanism",
                   "example", "example:ExampleDP", unit="example"),
    MechanismEntry("distributed", "client-level distributed DP: clipped updates are summed "
                   "under secure aggregation, each client adding its share of discrete Gaussian "
                   "noise (Kairouz et al. 2021)", "mechanism", "central",
                   "distributed:DistributedDP", unit="client", setting="central",
                   secure_sum=True),
    MechanismEntry("adaptive_clip", "wrapper: the clip tracks a quantile of the update norms "
                   "through a noised count (Andrew et al. 2021)", "wrapper", "central",
                   "adaptive_clipping:AdaptiveClipping", enabled_by="privacy.adaptive_clip"),
    MechanismEntry("noise_schedule", "wrapper: each span of the rounds scales the noise by its "
                   "factor", "wrapper", "central, local, example",
                   "noise_schedule:NoiseSchedule", enabled_by="privacy.noise_schedule"),
):
    MECHANISMS.register(_entry.name, _entry)

# The `privacy.setting` values the spec allows: those that select a registered mechanism.
SETTINGS: tuple[str, ...] = tuple(dict.fromkeys(
    e.setting for _, e in MECHANISMS.items() if e.setting is not None))


def select(private: bool, unit: str, setting: str, distributed: bool = False) -> MechanismEntry:
    """The base mechanism a privacy target selects.

    Args:
        private: a finite target epsilon; unit: "client" or "example"; setting: privacy.setting.
        distributed: secure aggregation with client-added noise (`secagg.distributed_dp`).
    Returns:
        The one registered base mechanism matching (no DP when not private).
    """
    if not private:
        return MECHANISMS.get("none")
    found = [e for _, e in MECHANISMS.items()
             if e.kind == "mechanism" and e.unit == unit and e.setting in (None, setting)
             and e.secure_sum == distributed]
    if len(found) != 1:
        raise PrivbenchError(f"privacy.setting = {setting!r} with privacy.unit = {unit!r}"
                             f"{' and secagg.distributed_dp' if distributed else ''}: no "
                             "registered mechanism runs this; see `privbench list`")
    return found[0]


def build(entry: MechanismEntry, z: float, *, round_factors: list[float] | None = None,
          adaptive: dict[str, Any] | None = None) -> Mechanism:
    """The base mechanism of `entry` at noise multiplier z, wrapped as the spec asks.

    Args:
        entry: the base mechanism (`select`).
        z: the calibrated noise multiplier (relative to the clip) of a round of factor 1.
        round_factors: the noise schedule's factor of each round (None or all 1: no wrapper).
        adaptive: the adaptive clipping wrapper's settings (target_quantile, clip_lr,
            count_noise_multiplier, expected_cohort), None: the clip stays fixed.
    Returns:
        The mechanism stack: AdaptiveClipping(NoiseSchedule(base)), leaving out the wrappers
        not asked for.
    """
    mechanism = entry.load()(z)
    if round_factors and any(f != 1.0 for f in round_factors):
        mechanism = MECHANISMS.get("noise_schedule").load()(mechanism, round_factors)
    if adaptive is not None:
        mechanism = MECHANISMS.get("adaptive_clip").load()(mechanism, **adaptive)
    return mechanism


__all__ = ["MECHANISMS", "SETTINGS", "MechanismEntry", "build", "select"]
