"""Partition spec strings (iid, dirichlet:ALPHA, quantity:ALPHA, natural) and the `partition` entry point."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Importing a partition module registers it in PARTITIONERS.
from fleettune.data.partitions import iid, label_skew, natural, quantity_skew  # noqa: F401
from fleettune.data.partitions.registry import PARTITIONERS, Partitioner, expected_forms
from fleettune.errors import ConfigError, DataError


def parse_partition(spec: str) -> Partitioner:
    """The partitioner a spec names; a bad spec is a ConfigError naming the ``partition`` field."""
    name, colon, arg = spec.strip().partition(":")
    if name not in PARTITIONERS:
        raise ConfigError(f"partition {spec!r} is invalid; expected one of: {expected_forms()}")
    return PARTITIONERS.get(name).make(arg.strip() if colon else None)


def partition(
    spec: str,
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[str] | None,
    num_clients: int,
    seed: int,
) -> list[np.ndarray]:
    """Sorted training-row indices per client: disjoint, covering every row, none empty, fixed by ``seed``."""
    partitioner = parse_partition(spec)
    if num_clients < 1:
        raise ConfigError(f"clients is {num_clients}; expected at least 1")
    label_array = np.asarray(labels, dtype=np.int64)
    if len(label_array) < num_clients:
        raise DataError(
            f"the training split has {len(label_array)} rows, fewer than the {num_clients} clients; "
            "expected at least one row per client"
        )
    group_array = None if groups is None else np.asarray(groups, dtype=str)
    parts = partitioner.split(label_array, group_array, num_clients, seed)
    for client, part in enumerate(parts):
        if len(part) == 0:
            raise DataError(
                f"partition {spec!r} left client {client} with no training rows; "
                "expected a larger ALPHA, fewer clients or more data"
            )
    assigned = np.concatenate(parts)
    if len(parts) != num_clients or not len(np.unique(assigned)) == len(assigned) == len(label_array):
        raise AssertionError(f"partition {spec!r} is not a partition of {len(label_array)} rows")
    return parts
