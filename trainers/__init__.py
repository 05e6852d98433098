"""Trainers: the federated loop, client updates, aggregation and DP mechanisms."""

from privbench.trainers.fedavg import tabular_inputs, train_fedavg

__all__ = ["tabular_inputs", "train_fedavg"]
