"""Timeline events of a simulated round: who computes or transfers what, and when (virtual seconds)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Activity(str, enum.Enum):
    CLIENT_FORWARD = "client-forward"
    UPLINK = "uplink"  # cut activations, client to server
    SERVER_QUEUE = "server-queue"  # arrived, waiting for the server
    SERVER_COMPUTE = "server-compute"  # server forward + backward for one client
    ADAPTER_SWITCH = "adapter-switch"
    DOWNLINK = "downlink"  # cut gradients, server to client
    CLIENT_BACKWARD = "client-backward"
    ADAPTER_UPLINK = "adapter-uplink"  # aggregation traffic and adapter hand-offs
    ADAPTER_DOWNLINK = "adapter-downlink"
    AGGREGATE = "aggregate"
    SECURE_AGGREGATION = "secure-aggregation"  # the protocol's messages beyond the masked adapter upload


@dataclass(frozen=True)
class Event:
    """One interval on one party's timeline; `party` is a client id or "server"."""

    round: int
    party: str
    activity: Activity
    start_s: float
    end_s: float
    client: str | None = None  # whose work it is, when the party is the server

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s
