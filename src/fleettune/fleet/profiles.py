"""Device, server and link profiles, and the catalogue of known hardware kinds."""

from __future__ import annotations

from dataclasses import dataclass

from fleettune.errors import FleetError


@dataclass(frozen=True)
class Hardware:
    """Compute and power of one machine; `efficiency` is the fraction of peak reached in practice."""

    kind: str
    tflops: float
    memory_gib: float
    power_w: float
    efficiency: float = 0.4

    def __post_init__(self) -> None:
        for name in ("tflops", "memory_gib", "power_w"):
            if getattr(self, name) <= 0:
                raise FleetError(f"{self.kind}: {name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.efficiency <= 1:
            raise FleetError(f"{self.kind}: efficiency must be in (0, 1], got {self.efficiency}")


@dataclass(frozen=True)
class Link:
    uplink_mbps: float = 100.0
    downlink_mbps: float = 100.0
    latency_ms: float = 5.0


@dataclass(frozen=True)
class Device:
    """One IoT device of a fleet: its hardware, link, cut layer, LoRA rank and availability."""

    id: str
    hardware: Hardware
    link: Link
    cut_layer: int | str = 1  # an int, or "auto" (chosen when the run or the planner resolves cuts)
    lora_rank: int | str | None = None  # an int, "auto" (chosen by the planner), or None: the run's rank
    availability: float = 1.0  # probability of being online in a round
    drop_probability: float = 0.0  # probability that, online, it disconnects during a round
    offline_rounds: frozenset[int] = frozenset()  # rounds (from 1) its availability trace marks offline


# Peak fp32 TFLOPS from public specifications (FACTS section 1); memory and typical power likewise.
CATALOG: dict[str, Hardware] = {
    h.kind: h
    for h in (
        Hardware("jetson-nano", 0.472, 4.0, 7.5),
        Hardware("jetson-tx2", 1.33, 8.0, 11.0),
        Hardware("snapdragon-8s-gen3", 1.689, 8.0, 6.0),
        Hardware("snapdragon-8-gen3", 2.774, 12.0, 7.0),
        Hardware("apple-a17-pro", 2.147, 8.0, 6.0),
        Hardware("apple-m3", 3.533, 16.0, 20.0),
        Hardware("raspberry-pi-4", 0.0135, 4.0, 6.4),
        Hardware("raspberry-pi-5", 0.031, 8.0, 8.0),
        Hardware("jetson-orin-nano", 1.28, 8.0, 10.0),
        Hardware("midrange-phone", 0.9, 6.0, 5.0),
        Hardware("rtx-4080-super", 52.2, 16.0, 320.0),
    )
}


DEFAULT_SERVER = "rtx-4080-super"  # the edge server of a fleet file that names none


def hardware(kind: str) -> Hardware:
    try:
        return CATALOG[kind]
    except KeyError:
        raise FleetError(f"unknown device kind {kind!r}; expected one of: {', '.join(sorted(CATALOG))}") from None
