"""The server's view of its devices between the gRPC handlers and the round driver.

Handlers (one thread per call) and the round driver (one thread) meet here, under one condition
variable: the driver posts an instruction or an expectation for a device and waits for the device's
payload; a handler delivers the payload and waits for the driver's reply. Nothing here computes.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from fleettune.errors import InputError
from fleettune.fleet import Device
from fleettune.runtime.memory import MemoryBreakdown
from fleettune.runtime.net.protocol import Do, Instruction


@dataclass
class Expected:
    """A payload the driver waits for from one device: activations of a step, or its adapter."""

    kind: str
    round: int
    step: int = -1


@dataclass(eq=False)  # a device is itself: compared by identity
class Member:
    """One device of the fleet as the server sees it."""

    id: str
    index: int
    device: Device
    samples: int = 0
    joined: bool = False
    incarnation: int = 0  # joins so far: a rejoin voids whatever the previous process left pending
    waiting: bool = False  # inside a poll right now: alive and idle
    ready: bool = False  # polled since it last joined: its stage is built
    last_seen: float = 0.0  # clock reading of its last request
    idle: bool = True  # finished its last instruction (it polled since)
    instruction: Instruction | None = None
    expected: Expected | None = None
    arrived: bytes | None = None
    arrived_at: float = 0.0
    reply: bytes | None = None
    synced: int = -1  # version of the global adapter it holds; -1: none known
    # flora: stacked updates folded into the base weights since it last synced, summed over its layers
    missed_base: dict[str, torch.Tensor] = field(default_factory=dict)
    memory: MemoryBreakdown = field(default_factory=MemoryBreakdown)
    busy_s: float = 0.0
    tail_s: float = 0.0  # measured backward of its last step: the scheduler's tail
    upload_s: float = 0.0  # measured duration of its last adapter upload: part of the tail before an aggregation
    loss: float | None = None  # fl: mean loss of its last local training


class Board:
    """Thread-safe meeting point of handlers and the driver."""

    def __init__(self, devices: Iterable[Device], clock: Callable[[], float] = time.monotonic) -> None:
        self.members = {d.id: Member(d.id, i, d) for i, d in enumerate(devices)}
        self.cv = threading.Condition()
        self.clock = clock
        self.closed = False

    def member(self, device: str) -> Member:
        found = self.members.get(device)
        if found is None:
            raise PermissionError(f"device {device!r} is not in the server's fleet")
        return found

    # --- handler side -------------------------------------------------------------------------------------
    def poll(self, device: str, status: dict[str, str], wait_s: float) -> Instruction:
        """Note the device is idle (its last instruction is done) and hand it the next one, or WAIT."""
        with self.cv:
            m = self._joined(device)
            m.last_seen = self.clock()
            _note_status(m, status)
            m.idle, m.waiting, m.ready = True, True, True
            self.cv.notify_all()
            incarnation = m.incarnation
            end = self.clock() + wait_s
            while m.instruction is None and not self.closed and m.incarnation == incarnation:
                left = end - self.clock()
                if left <= 0:
                    break
                self.cv.wait(left)
            m.waiting = False
            m.last_seen = self.clock()
            if self.closed and m.instruction is None:
                return Instruction(Do.DONE)
            instruction, m.instruction = m.instruction, None
            if instruction is None or m.incarnation != incarnation:
                return Instruction(Do.WAIT)
            m.idle = False
            return instruction

    def deliver(self, device: str, kind: str, round: int, step: int, payload: bytes, reply_wait_s: float) -> bytes:
        """A device's payload the driver expects; returns the driver's reply (b"" when none is due)."""
        with self.cv:
            m = self._joined(device)
            m.last_seen = self.clock()
            e = m.expected
            if e is None or (e.kind, e.round, e.step) != (kind, round, step):
                wanted = f"{e.kind} of round {e.round} step {e.step}" if e else "nothing"
                raise InputError(f"out-of-phase {kind} of round {round} step {step} from {device}; expected {wanted}")
            m.expected = None
            m.arrived, m.arrived_at, m.reply = payload, self.clock(), None
            self.cv.notify_all()
            if kind != "activations":
                return b""
            incarnation = m.incarnation
            end = self.clock() + reply_wait_s
            while m.reply is None and m.incarnation == incarnation and not self.closed:
                left = end - self.clock()
                if left <= 0:
                    break
                self.cv.wait(left)
            if m.reply is None:
                raise InputError(
                    f"device {device}: no gradients for round {round} step {step} (dropped from the round)"
                )
            reply, m.reply = m.reply, None
            return reply

    def _joined(self, device: str) -> Member:
        m = self.member(device)
        if not m.joined:
            raise InputError(f"device {device} has not joined (or the server restarted); expected a join first")
        return m

    # --- driver side (call with self.cv held) ----------------------------------------------------------------
    def wait_until(self, done: Callable[[], bool], deadline: float | None) -> bool:
        """Wait (lock held) until `done()`; False if `deadline` (a clock reading) passed first."""
        while not done():
            left = None if deadline is None else deadline - self.clock()
            if left is not None and left <= 0:
                return False
            self.cv.wait(left)
        return True

    def post(self, m: Member, instruction: Instruction, expected: Expected | None = None) -> None:
        m.instruction, m.expected, m.arrived, m.reply = instruction, expected, None, None
        m.idle = False
        self.cv.notify_all()

    def release(self, m: Member) -> None:
        """The driver gives up on `m` for this stretch: nothing it sends now is expected."""
        m.instruction, m.expected, m.arrived = None, None, None
        self.cv.notify_all()

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify_all()


def _note_status(m: Member, status: dict[str, str]) -> None:
    try:
        memory = json.loads(status.get("memory", "{}") or "{}")
        if memory:
            m.memory = m.memory.peak_with(MemoryBreakdown(**{k: int(v) for k, v in memory.items()}))
        m.busy_s = float(status.get("busy_s", m.busy_s))
        if "tail_s" in status:
            m.tail_s = _seconds(status["tail_s"], "tail_s")
        if "upload_s" in status:
            m.upload_s = _seconds(status["upload_s"], "upload_s")
        if "loss" in status:
            m.loss = float(status["loss"])
    except (ValueError, TypeError) as exc:
        raise InputError(f"device {m.id}: malformed status fields ({exc})") from None


def _seconds(text: str, name: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {text!r}")
    return value
