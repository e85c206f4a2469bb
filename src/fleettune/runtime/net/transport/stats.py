"""Thread-safe counters of the bytes a transport endpoint put on and took off the wire, per device."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class WireStats:
    """Serialized chunk bytes (`sent`, `received`) and the payload bytes inside them, keyed by device id.

    A server keys by the authenticated device; a client by its own id. Chunk sizes are the protobuf
    serialized sizes (gRPC's 5-byte message framing and HTTP/2 frames come on top). Read the dicts
    directly for a rough look, or take a `snapshot()` for a consistent copy.
    """

    sent: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    payload_sent: dict[str, int] = field(default_factory=dict)
    payload_received: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_sent(self, device: str, wire: int, payload: int) -> None:
        with self._lock:
            self.sent[device] = self.sent.get(device, 0) + wire
            self.payload_sent[device] = self.payload_sent.get(device, 0) + payload

    def add_received(self, device: str, wire: int, payload: int) -> None:
        with self._lock:
            self.received[device] = self.received.get(device, 0) + wire
            self.payload_received[device] = self.payload_received.get(device, 0) + payload

    def snapshot(self) -> WireStats:
        with self._lock:
            return WireStats(dict(self.sent), dict(self.received), dict(self.payload_sent), dict(self.payload_received))

    def totals(self) -> dict[str, int]:
        """Sums over devices: sent, received, payload_sent, payload_received."""
        with self._lock:
            return {
                "sent": sum(self.sent.values()),
                "received": sum(self.received.values()),
                "payload_sent": sum(self.payload_sent.values()),
                "payload_received": sum(self.payload_received.values()),
            }
