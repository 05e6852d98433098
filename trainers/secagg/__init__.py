"""Secure aggregation (Bonawitz et al. 2017, SecAgg+), distributed discrete-Gaussian DP,
compression and hierarchical aggregation, as self-contained pieces the federated loop can call."""

from privbench.trainers.secagg.client import SecAggClient
from privbench.trainers.secagg.protocol import SecAggServer, run_secure_sum
from privbench.trainers.secagg.setup import SecAggAbort, SecAggConfig

__all__ = ["SecAggAbort", "SecAggClient", "SecAggConfig", "SecAggServer", "run_secure_sum"]
