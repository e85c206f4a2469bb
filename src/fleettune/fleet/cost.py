"""Cost model: seconds and joules of compute and transfers on a device, and the server's adapter switch."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from fleettune.errors import ModelError
from fleettune.fleet.profiles import Device, Hardware

BITS_PER_BYTE = 8


def compute_s(flops: int | float, hw: Hardware) -> float:
    """Seconds `hw` needs for `flops` at its practical rate (peak times efficiency)."""
    return flops / (hw.tflops * 1e12 * hw.efficiency)


def transfer_s(payload_bytes: int | float, rate_mbps: float, latency_ms: float) -> float:
    """Seconds to send `payload_bytes` over a link: serialisation at `rate_mbps` (10^6 bit/s) plus latency."""
    return payload_bytes * BITS_PER_BYTE / (rate_mbps * 1e6) + latency_ms / 1000


def uplink_s(device: Device, n_bytes: int | float) -> float:
    """Device to server."""
    return transfer_s(n_bytes, device.link.uplink_mbps, device.link.latency_ms)


def downlink_s(device: Device, n_bytes: int | float) -> float:
    """Server to device."""
    return transfer_s(n_bytes, device.link.downlink_mbps, device.link.latency_ms)


def energy_j(power_w: float, busy_s: float) -> float:
    return power_w * busy_s


def measure_switch_s(
    switch: Callable[[str], object],
    names: Sequence[str],
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Mean wall seconds of one `switch(name)`, cycling `repeats` times through `names`.

    `switch` is whatever the shared server does to serve the next client's adapter; the caller
    re-selects the adapter it wants active afterwards.
    """
    if len(names) < 2:
        raise ModelError(f"measuring an adapter switch needs at least 2 adapter names, got {list(names)}")
    if repeats < 1:
        raise ModelError(f"repeats must be >= 1, got {repeats}")
    switches = repeats * len(names)
    started = clock()
    for i in range(switches):
        switch(names[i % len(names)])
    elapsed = clock() - started
    return elapsed / switches
