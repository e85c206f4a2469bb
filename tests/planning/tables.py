"""Hand-built per-cut costs and fleets for planner tests: no model is built or measured."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fleettune.fleet import Fleet
from fleettune.fleet.feasibility import GIB
from fleettune.fleet.flops import StageFlops
from fleettune.fleet.profiles import Device, Hardware, Link
from fleettune.planning import CutCost

GFLOP = 10**9
MIB = 2**20


@dataclass(frozen=True)
class TableCosts:
    """`CutCosts` from a table: the same FLOPs and bytes at every rank, memory from a function of (cut, rank)."""

    per_cut: Mapping[int, CutCost]
    memory: Callable[[int, int], int]

    @property
    def cuts(self) -> Sequence[int]:
        return sorted(self.per_cut)

    def cost(self, cut: int, rank: int) -> CutCost:
        return self.per_cut[cut]

    def memory_bytes(self, cut: int, rank: int) -> int:
        return self.memory(cut, rank)


def layered(
    layers: int,
    layer_gflop: float,
    payload_mib: float | Sequence[float],
    memory: Callable[[int, int], int],
    adapter_mib: float = 0.0,
) -> TableCosts:
    """A model of `layers` equal layers: each costs `layer_gflop` forward and twice that backward; the
    cut tensor is `payload_mib` each way (one value, or one per cut); the client's adapter part is
    `adapter_mib` per client layer."""
    table = {}
    for cut in range(1, layers):
        mib = payload_mib if isinstance(payload_mib, (int, float)) else payload_mib[cut - 1]
        client = StageFlops(int(cut * layer_gflop * GFLOP), int(2 * cut * layer_gflop * GFLOP))
        server = StageFlops(int((layers - cut) * layer_gflop * GFLOP), int(2 * (layers - cut) * layer_gflop * GFLOP))
        table[cut] = CutCost(client, server, int(mib * MIB), int(mib * MIB), int(cut * adapter_mib * MIB))
    return TableCosts(table, memory)


def gib_per_layer(cut: int, rank: int) -> int:
    """One GiB per client layer, plus 1/64 GiB per unit of rank."""
    return cut * GIB + rank * GIB // 64


def device(
    name: str, tflops: float, memory_gib: float = 64.0, mbps: float = 100.0, rank: int | str | None = None
) -> Device:
    return Device(name, Hardware(name, tflops, memory_gib, 5.0, 1.0), Link(mbps, mbps, 1.0), "auto", rank)


def fleet(devices: Sequence[Device], server_tflops: float) -> Fleet:
    return Fleet("table", Hardware("server", server_tflops, 64.0, 300.0, 1.0), tuple(devices))


def random_instance(seed: int, n_devices: int, layers: int = 4) -> tuple[Fleet, TableCosts]:
    """Devices with random speed, link and memory; a model whose cut tensor size varies by cut, and whose adapter
    part grows with the cut."""
    rng = random.Random(seed)
    devices = [
        device(f"d{i}", rng.uniform(0.05, 2.0), rng.choice([2.5, 3.5, 64.0]), rng.uniform(20.0, 400.0))
        for i in range(n_devices)
    ]
    payloads = [rng.uniform(0.2, 3.0) for _ in range(layers - 1)]
    layer_gflop = rng.uniform(0.5, 4.0)
    costs = layered(layers, layer_gflop, payloads, gib_per_layer, adapter_mib=rng.uniform(0.05, 1.0))
    return fleet(devices, rng.uniform(1.0, 20.0)), costs
