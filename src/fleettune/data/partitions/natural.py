"""Natural partition: clients follow the rows' natural groups (device kind, product type)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleettune.data.partitions.registry import PARTITIONERS, PartitionKind, no_argument
from fleettune.errors import DataError


def clients_per_group(sizes: np.ndarray, num_clients: int) -> np.ndarray:
    """One client per group, then each extra client to the group with most rows per client (D'Hondt)."""
    counts = np.ones(len(sizes), dtype=np.int64)
    for _ in range(num_clients - len(sizes)):
        counts[int(np.argmax(sizes / counts))] += 1
    return counts


def groups_per_client(sizes: np.ndarray, num_clients: int) -> list[list[int]]:
    """Whole groups to clients, largest group first to the client with fewest rows so far."""
    load = np.zeros(num_clients, dtype=np.int64)
    owned: list[list[int]] = [[] for _ in range(num_clients)]
    for group in np.lexsort((np.arange(len(sizes)), -sizes)):
        client = int(np.argmin(load))
        owned[client].append(int(group))
        load[client] += sizes[group]
    return owned


@dataclass(frozen=True)
class Natural:
    def split(self, labels: np.ndarray, groups: np.ndarray | None, num_clients: int, seed: int) -> list[np.ndarray]:
        """One client per group (groups in sorted order) when the counts match.

        The counts need not match, since a fleet's size rarely equals the number of device kinds:
        with more clients than groups, each group's rows are shared IID among the clients it is
        given, so every client still holds exactly one group; with fewer clients, each client holds
        one or more whole groups, balanced by rows, so no group is ever split across clients.
        """
        if groups is None:
            raise DataError(
                "partition 'natural' needs rows with natural groups (device kind, product type) and this "
                "dataset has none; expected iid, dirichlet:ALPHA or quantity:ALPHA"
            )
        names, group_of_row = np.unique(groups, return_inverse=True)
        rows = [np.flatnonzero(group_of_row == g) for g in range(len(names))]
        sizes = np.array([len(r) for r in rows], dtype=np.int64)
        if num_clients >= len(names):
            rng = np.random.default_rng(seed)
            return [
                np.sort(part)
                for group_rows, count in zip(rows, clients_per_group(sizes, num_clients), strict=True)
                for part in np.array_split(rng.permutation(group_rows), count)
            ]
        return [np.sort(np.concatenate([rows[g] for g in owned])) for owned in groups_per_client(sizes, num_clients)]


def make_natural(arg: str | None) -> Natural:
    no_argument("natural", arg)
    return Natural()


PARTITIONERS.add("natural", PartitionKind("natural", make_natural))
