"""What one device's training step costs at a cut, and the one function that turns those costs into seconds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fleettune.fleet.cost import compute_s, downlink_s, uplink_s
from fleettune.fleet.flops import StageFlops
from fleettune.fleet.profiles import Device, Hardware
from fleettune.runtime.sim.clock import StepPhases
from fleettune.scheduling import Job


@dataclass(frozen=True)
class CutCost:
    """One step at one cut and LoRA rank, before any hardware or link prices it.

    `client` and `server` are the FLOPs of each stage for one batch; `up_bytes` and `down_bytes` the
    encoded payloads of the cut activations and of their gradient; `adapter_bytes` the encoded payload of
    the client-side adapter part (what goes up, and comes back averaged, at each aggregation).
    """

    client: StageFlops
    server: StageFlops
    up_bytes: int
    down_bytes: int
    adapter_bytes: int = 0


class CutCosts(Protocol):
    """Per-cut costs of one model at one batch shape: what pricing a step and planning a fleet read."""

    @property
    def cuts(self) -> Sequence[int]:
        """The cuts a device may take, shallowest first."""
        ...

    def cost(self, cut: int, rank: int) -> CutCost:
        """FLOPs and payload bytes of one step at `cut` with LoRA rank `rank`."""
        ...

    def memory_bytes(self, cut: int, rank: int) -> int:
        """Peak bytes the client stage holds at `cut` with LoRA rank `rank`."""
        ...


def price_step(device: Device, cost: CutCost, server: Hardware, switch_s: float = 0.0) -> StepPhases:
    """The phases of `device`'s step: its compute and links priced by its own profile, the server's
    work by the server's, plus `switch_s` for the server to load this device's adapter."""
    return StepPhases(
        device.id,
        compute_s(cost.client.forward, device.hardware),
        uplink_s(device, cost.up_bytes),
        compute_s(cost.server.total, server),
        switch_s,
        downlink_s(device, cost.down_bytes),
        compute_s(cost.client.backward, device.hardware),
    )


@dataclass(frozen=True)
class Option:
    """One way to run a device: its cut, LoRA rank, client memory, step costs and priced phases, and the
    seconds its adapter part takes up and back down at an aggregation."""

    cut: int
    rank: int
    memory_bytes: int
    cost: CutCost
    phases: StepPhases
    upload_s: float = 0.0
    download_s: float = 0.0


def price_option(
    device: Device, cut: int, rank: int, memory_bytes: int, cost: CutCost, server: Hardware, switch_s: float
) -> Option:
    """`device` at (cut, rank): its step priced by `price_step`, its adapter part's round trip by its links."""
    phases = price_step(device, cost, server, switch_s)
    up, down = uplink_s(device, cost.adapter_bytes), downlink_s(device, cost.adapter_bytes)
    return Option(cut, rank, memory_bytes, cost, phases, up, down)


def server_job(phases: StepPhases) -> Job:
    """The device's turn at the server: released after forward and uplink, served for the adapter
    switch and the server's compute, done a tail (downlink and backward) later."""
    return Job(phases.client, phases.release_s, phases.switch_s + phases.server_s, phases.tail_s)


def plain_job(option: Option) -> Job:
    """The device's turn at the server in a step that ends without an aggregation."""
    return server_job(option.phases)
