"""Aggregation of adapter states across clients."""

from fleettune.aggregation.fedavg import fedavg, sample_weights

__all__ = ["fedavg", "sample_weights"]
