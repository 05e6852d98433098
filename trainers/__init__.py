"""Trainers: the federated loop, client updates, aggregation and DP mechanisms."""

from privbench.trainers.fedavg import train_fedavg

__all__ = ["train_fedavg"]
