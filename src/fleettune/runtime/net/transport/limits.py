"""How many calls one authenticated device may hold open at once: a device that opens streams and trickles
(or never finishes them) can tie up only its own few workers, never the server's whole pool."""

from __future__ import annotations

import threading
from collections import Counter


class CallLimit:
    def __init__(self, per_device: int) -> None:
        if not isinstance(per_device, int) or per_device < 1:
            raise ValueError(f"calls per device: expected an integer >= 1, got {per_device!r}")
        self.per_device = per_device
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def enter(self, device: str) -> bool:
        """Take a slot for `device`; False when it already holds every slot it may."""
        with self._lock:
            if self._open[device] >= self.per_device:
                return False
            self._open[device] += 1
            return True

    def leave(self, device: str) -> None:
        with self._lock:
            self._open[device] -= 1
            if self._open[device] <= 0:
                del self._open[device]

    def open_calls(self, device: str) -> int:
        with self._lock:
            return self._open[device]
