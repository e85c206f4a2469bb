"""Ledgers of bytes moved and energy spent, per party."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

CUT = "cut"  # activations up and gradients down at the cut layer
ADAPTER = "adapter"  # adapter states and updates: aggregation and hand-offs
SETUP = "setup"  # deployment: the adapter a device receives when it joins
SECAGG = "secagg"  # secure aggregation's messages beyond the masked input (which is the adapter upload)


@dataclass
class TrafficLedger:
    """Encoded payload bytes per client, up (client to server) and down, and per kind of traffic."""

    uplink: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    downlink: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    kinds: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> {"uplink": n, "downlink": n}

    def up(self, client: str, payload: bytes, kind: str) -> None:
        self.count(client, kind, uplink=len(payload))

    def down(self, client: str, payload: bytes, kind: str) -> None:
        self.count(client, kind, downlink=len(payload))

    def count(self, client: str, kind: str, uplink: int = 0, downlink: int = 0) -> None:
        """Bytes by count: also for payloads only partly sent (a device left while they were under way)."""
        self.uplink[client] += uplink
        self.downlink[client] += downlink
        totals = self.kinds.setdefault(kind, {"uplink": 0, "downlink": 0})
        totals["uplink"] += uplink
        totals["downlink"] += downlink

    def total_uplink(self) -> int:
        return sum(self.uplink.values())

    def total_downlink(self) -> int:
        return sum(self.downlink.values())

    def per_client(self, clients: list[str]) -> dict[str, dict[str, int]]:
        return {c: {"uplink": self.uplink.get(c, 0), "downlink": self.downlink.get(c, 0)} for c in clients}


@dataclass
class EnergyLedger:
    """Joules per party: power (W) times busy seconds."""

    server_j: float = 0.0
    clients_j: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def server_busy(self, power_w: float, seconds: float) -> None:
        self.server_j += power_w * seconds

    def client_busy(self, client: str, power_w: float, seconds: float) -> None:
        self.clients_j[client] += power_w * seconds
