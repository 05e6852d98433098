"""Secure aggregation (Bonawitz et al. 2017, SecAgg+), distributed discrete-Gaussian DP,
compression and hierarchical aggregation, as self-contained pieces the federated loop can call."""

from privbench.trainers.secagg.protocol import (
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    run_secure_sum,
)

__all__ = ["SecAggAbort", "SecAggClient", "SecAggConfig", "SecAggServer", "run_secure_sum"]
