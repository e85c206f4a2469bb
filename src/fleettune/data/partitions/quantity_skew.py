"""Quantity skew: client sizes drawn from Dirichlet(ALPHA), labels IID within each client."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleettune.data.partitions.registry import PARTITIONERS, PartitionKind, min_client_rows, parse_alpha
from fleettune.data.sampling import apportion


@dataclass(frozen=True)
class QuantitySkew:
    alpha: float

    def split(self, labels: np.ndarray, groups: np.ndarray | None, num_clients: int, seed: int) -> list[np.ndarray]:
        """Every client first gets ``min_client_rows``; the rest is shared by Dirichlet(ALPHA) weights."""
        rng = np.random.default_rng(seed)
        floor = min_client_rows(len(labels), num_clients)
        weights = rng.dirichlet(np.full(num_clients, self.alpha))
        spare = len(labels) - floor * num_clients
        sizes = floor + apportion(weights, spare, np.full(num_clients, spare))
        order = rng.permutation(len(labels))
        return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]


def make_quantity_skew(arg: str | None) -> QuantitySkew:
    return QuantitySkew(parse_alpha("quantity", arg))


PARTITIONERS.add("quantity", PartitionKind("quantity:ALPHA", make_quantity_skew))
