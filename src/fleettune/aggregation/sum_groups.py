"""Which devices securely sum which keys: every key among exactly the devices that hold it.

In a split scheme devices at different cuts hold different parts of the adapter. One protocol instance sums
vectors of one length, so summing everything at once would make each device mask every roster device's keys,
zeros where it holds none: a device at a shallow cut would upload several times its own part. Instead the keys
are grouped by the set of roster devices holding them, and each group is summed by its own protocol instance
among its holders (in `fl` every device holds every key: one group). What the server learns is the same (the
sum of each key over its holders); each device masks only what it holds.

A key held by a single roster device cannot be hidden in a sum (the server knows the other devices hold none of
it); such keys join the group with the most holders, where the others add zeros, and the server learns that
device's values. Spread cuts so that every layer has at least two holders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from fleettune.privacy.secagg import min_threshold

AdapterState = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SumGroup:
    """One protocol instance of an aggregation: its devices (in roster order), the keys they sum and its threshold."""

    index: int
    clients: tuple[str, ...]
    template: AdapterState  # zeros (float64) of the group's keys
    threshold: int

    @property
    def size(self) -> int:
        return sum(t.numel() for t in self.template.values())


def sum_groups(holdings: Mapping[str, Mapping[str, torch.Tensor]], threshold: int) -> list[SumGroup]:
    """The groups of an aggregation over the roster `holdings` (device -> the keys it holds, with their shapes; in
    roster order). A group tolerates as many dropouts as the whole roster does under `threshold`: its threshold is
    its size less that tolerance, and never below a strict majority of it."""
    roster = list(holdings)
    shapes: dict[str, torch.Size] = {}
    holders: dict[str, list[str]] = {}
    for client in roster:
        for key, value in holdings[client].items():
            shapes.setdefault(key, value.shape)
            holders.setdefault(key, []).append(client)
    by_holders: dict[tuple[str, ...], list[str]] = {}
    for key in sorted(holders):
        by_holders.setdefault(tuple(holders[key]), []).append(key)
    shared = {who: keys for who, keys in by_holders.items() if len(who) >= 2}
    for who, keys in by_holders.items():
        if len(who) >= 2:
            continue
        # A key only one device holds goes where the most devices add zeros to it (the first such, in key order).
        hosts = [group for group in shared if who[0] in group] or [tuple(roster)]
        host = max(hosts, key=len)
        shared[host] = sorted(shared.get(host, []) + keys)
    tolerance = max(0, len(roster) - threshold)
    groups = []
    for index, (who, keys) in enumerate(sorted(shared.items(), key=lambda item: item[1][0])):
        group_threshold = min(len(who), max(min_threshold(len(who)), len(who) - tolerance))
        template = {key: torch.zeros(shapes[key], dtype=torch.float64) for key in keys}
        groups.append(SumGroup(index, who, template, group_threshold))
    return groups


def groups_of(client: str, groups: Sequence[SumGroup]) -> list[SumGroup]:
    return [g for g in groups if client in g.clients]
