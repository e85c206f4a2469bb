"""IID partition: a seeded shuffle cut into near-equal clients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleettune.data.partitions.registry import PARTITIONERS, PartitionKind, no_argument


@dataclass(frozen=True)
class Iid:
    def split(self, labels: np.ndarray, groups: np.ndarray | None, num_clients: int, seed: int) -> list[np.ndarray]:
        order = np.random.default_rng(seed).permutation(len(labels))
        return [np.sort(part) for part in np.array_split(order, num_clients)]


def make_iid(arg: str | None) -> Iid:
    no_argument("iid", arg)
    return Iid()


PARTITIONERS.add("iid", PartitionKind("iid", make_iid))
