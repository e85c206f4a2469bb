"""Aggregation of adapter states across clients."""

from fleettune.aggregation import foolsgold  # noqa: F401  (registers the foolsgold aggregator)
from fleettune.aggregation.fedavg import fedavg, sample_weights
from fleettune.aggregation.hetero import flora_stack, hetlora_aggregate, hetlora_truncate, lora_deltas, merge_into

__all__ = [
    "fedavg",
    "flora_stack",
    "hetlora_aggregate",
    "hetlora_truncate",
    "lora_deltas",
    "merge_into",
    "sample_weights",
]
