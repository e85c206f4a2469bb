"""The server's per-device replay and ordering guard, and the last reply kept for an exact retry."""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass, field

import grpc

from fleettune.runtime.net.transport.errors import ProtocolError
from fleettune.runtime.net.transport.wire import Outgoing


@dataclass
class Outcome:
    """What the handler made of a request: a reply ready to stream, or an error status."""

    reply: Outgoing | None = None
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""


@dataclass
class Slot:
    """A device's latest accepted request; its outcome is set once, when the handler returns."""

    seq: int
    digest: bytes
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None

    def finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.done.set()

    def wait(self, timeout_s: float | None = None) -> Outcome | None:
        """The outcome, or None if it is still pending after `timeout_s`."""
        self.done.wait(timeout_s)
        return self.outcome


def _out_of_order(device: str, seq: int, last: int, why: str) -> ProtocolError:
    return ProtocolError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"replayed or out-of-order message from {device}: seq {seq} {why} (last accepted seq {last})",
    )


class ReplayGuard:
    """Requests of a device must carry strictly increasing seq; the same seq and digest is a retry.

    Only the latest request per device is remembered (with its reply, until the next one), so a device
    must make one call at a time. A restarted server starts afresh and accepts any first seq.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, Slot] = {}

    def precheck(self, device: str, seq: int) -> None:
        """Refuse a stale seq as soon as its header arrives, before its payload is read."""
        with self._lock:
            last = self._last.get(device)
        if last is not None and seq < last.seq:
            raise _out_of_order(device, seq, last.seq, "is below the last one")

    def admit(self, device: str, seq: int, digest: bytes) -> tuple[Slot, bool]:
        """The slot to answer from, and whether this request is new (run the handler) or a retry."""
        with self._lock:
            last = self._last.get(device)
            if last is None or seq > last.seq:
                slot = Slot(seq, digest)
                self._last[device] = slot
                return slot, True
        if seq < last.seq:
            raise _out_of_order(device, seq, last.seq, "is below the last one")
        if not hmac.compare_digest(digest, last.digest):
            raise _out_of_order(device, seq, last.seq, "repeats the last seq with different content")
        return last, False
