"""What secure aggregation's messages cost the devices: bytes in the ledger, time on their links, energy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fleettune.aggregation.secure import ProtocolTraffic
from fleettune.fleet import Device
from fleettune.fleet.cost import downlink_s, uplink_s
from fleettune.privacy.secagg import ROUNDS
from fleettune.runtime.events import Activity, Event
from fleettune.runtime.ledger import SECAGG, EnergyLedger, TrafficLedger
from fleettune.runtime.sim.clock import Timeline


@dataclass(frozen=True)
class ProtocolPhase:
    """The protocol's messages as one phase after the uploads: each protocol round waits for its slowest device."""

    seconds: float
    busy_s: dict[str, float] = field(default_factory=dict)  # each device's own transfer time

    def timeline(self, round_index: int, t0: float) -> Timeline:
        events = [
            Event(round_index, client, Activity.SECURE_AGGREGATION, t0, t0 + busy, client)
            for client, busy in self.busy_s.items()
            if busy > 0
        ]
        return Timeline(events, t0 + self.seconds)


def charge_protocol(
    protocol: ProtocolTraffic, devices: Mapping[str, Device], traffic: TrafficLedger, energy: EnergyLedger
) -> ProtocolPhase:
    """Book every device's protocol bytes under `secagg` and its link time as busy; the phase lasts, per protocol
    round, as long as the slowest device's messages of that round (latency included)."""
    busy = dict.fromkeys(protocol.sent, 0.0)
    seconds = 0.0
    for name in ROUNDS:
        slowest = 0.0
        for client, sent in protocol.sent.items():
            device = devices[client]
            up, down = sent[name], protocol.received[client][name]
            spent = (uplink_s(device, up) if up else 0.0) + (downlink_s(device, down) if down else 0.0)
            busy[client] += spent
            slowest = max(slowest, spent)
        seconds += slowest
    for client, sent in protocol.sent.items():
        traffic.count(client, SECAGG, uplink=sum(sent.values()), downlink=sum(protocol.received[client].values()))
        energy.client_busy(client, devices[client].hardware.power_w, busy[client])
    return ProtocolPhase(seconds, busy)
