"""Client-level distributed DP under secure aggregation (Kairouz et al. 2021): each client clips
its update and adds its share of discrete Gaussian noise inside the secure sum
(trainers/secagg/), so neither the server nor anyone after it sees an update or a sum without
the noise; the server adds none. Accounted from the noise each round's sum realised
(trainers/secagg/ddp_accounting.py)."""

from __future__ import annotations

from privbench.errors import PrivbenchError
from privbench.trainers.mechanisms.base import Aggregated, ServerRound
from privbench.trainers.mechanisms.central import CentralDP


class DistributedDP(CentralDP):
    """Central DP-FedAvg whose noise the clients add under secure aggregation."""

    name = "distributed"

    def aggregate(self, server: ServerRound) -> Aggregated:
        if not server.aggregator.secure:
            raise PrivbenchError("secagg.distributed_dp = true: needs secagg.enabled = true "
                                 "(the clients' noise is added inside the secure sum)")
        return super().aggregate(server)
