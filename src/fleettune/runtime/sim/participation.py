"""Who takes part in a round: availability, mid-round disconnects and the deadline, and what drop-outs cost.

Availability (a probability per device, or the offline rounds of a trace) and disconnects are drawn
from the run's seeded RNG on a stream of their own: three numbers per device and round, in fleet
order, whether or not they are used. Every scheme run with a seed therefore sees the same devices
offline and the same disconnects, and runs that use none of this draw nothing else differently.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fleettune.fleet.profiles import Device

STREAM = 3  # the run's RNG stream (`RunSetup.rng(STREAM)`) for availability and disconnects


class Cause(str, enum.Enum):
    """Why a device left a round before its update counted."""

    DEADLINE = "deadline"  # its work would have ended after the round's deadline
    DISCONNECT = "disconnect"  # it went away at a random moment of its work


@dataclass(frozen=True)
class Leave:
    """The virtual moment a device stopped working on the round, and why."""

    at_s: float
    cause: Cause


@dataclass(frozen=True)
class Turnout:
    """One round's draw: the devices offline, and for each device that will disconnect, the share
    of its interruptible work (in [0, 1)) done when it does."""

    offline: frozenset[str] = frozenset()
    drops: dict[str, float] = field(default_factory=dict)

    def drop_point(self, client: str, parts: int) -> tuple[int, float] | None:
        """Where `client` disconnects when its work is `parts` parts of equal weight: (part, share of it)."""
        share = self.drops.get(client)
        if share is None:
            return None
        scaled = share * parts
        part = min(parts - 1, int(scaled))
        return part, scaled - part


class Participation:
    """Per-round draws for a fleet: call `draw` once per round, in order."""

    def __init__(self, devices: Sequence[Device], deadline_s: float | None, rng: np.random.Generator) -> None:
        self.devices = list(devices)
        self.deadline_s = deadline_s
        self._rng = rng
        self._next = 0

    @property
    def may_drop(self) -> bool:
        """Whether any device can leave a round it started (a deadline, or a drop probability)."""
        return self.deadline_s is not None or any(d.drop_probability > 0 for d in self.devices)

    def deadline_at(self, start_s: float) -> float | None:
        return None if self.deadline_s is None else start_s + self.deadline_s

    def draw(self, round_index: int) -> Turnout:
        """Round `round_index`'s (from 0) offline devices and disconnects."""
        if round_index != self._next:
            raise ValueError(f"rounds are drawn in order: expected round {self._next}, got {round_index}")
        self._next += 1
        numbers = self._rng.random((len(self.devices), 3))
        offline: set[str] = set()
        drops: dict[str, float] = {}
        for device, (online, drop, moment) in zip(self.devices, numbers, strict=True):
            if round_index + 1 in device.offline_rounds or online >= device.availability:
                offline.add(device.id)
            elif drop < device.drop_probability:
                drops[device.id] = float(moment)
        return Turnout(frozenset(offline), drops)


@dataclass
class Spend:
    """Work done for one device: its busy seconds, the server's seconds for it, and bytes each way."""

    client_s: float = 0.0
    server_s: float = 0.0
    uplink_bytes: int = 0
    downlink_bytes: int = 0

    def add(self, other: Spend) -> None:
        self.client_s += other.client_s
        self.server_s += other.server_s
        self.uplink_bytes += other.uplink_bytes
        self.downlink_bytes += other.downlink_bytes


@dataclass(frozen=True)
class RoundTurnout:
    """Who took part in one round (online and selected) and who of them left before their update counted."""

    participants: tuple[str, ...] = ()
    offline: tuple[str, ...] = ()
    dropped_deadline: tuple[str, ...] = ()
    dropped_disconnect: tuple[str, ...] = ()

    @property
    def completed(self) -> tuple[str, ...]:
        gone = set(self.dropped_deadline) | set(self.dropped_disconnect)
        return tuple(c for c in self.participants if c not in gone)


@dataclass
class ParticipationTotals:
    """Counts over a run, in device-rounds, and the work spent in rounds a device was dropped from."""

    client_rounds: int = 0  # (device, round) pairs in which the device took part
    completed: int = 0
    offline: int = 0
    dropped_deadline: int = 0
    dropped_disconnect: int = 0
    rounds_without_update: int = 0  # rounds in which nobody completed: the global model stayed as it was
    lost_work: Spend = field(default_factory=Spend)


class ParticipationLog:
    """The open round's participants, who left and when, and what each spent; totals over the run."""

    def __init__(self) -> None:
        self.totals = ParticipationTotals()
        self._participants: list[str] = []
        self._offline: list[str] = []
        self._left: dict[str, Leave] = {}
        self._spend: dict[str, Spend] = {}

    def begin(self, turnout: Turnout, selected: Iterable[str]) -> list[str]:
        """Open a round among the `selected` devices; returns those online, in order."""
        chosen = list(selected)
        self._participants = [c for c in chosen if c not in turnout.offline]
        self._offline = [c for c in chosen if c in turnout.offline]
        self._left = {}
        self._spend = {}
        return list(self._participants)

    def spend(self, client: str, spent: Spend) -> None:
        self._spend.setdefault(client, Spend()).add(spent)

    def leave(self, client: str, leave: Leave) -> None:
        self._left.setdefault(client, leave)

    def gone(self, client: str) -> bool:
        return client in self._left

    @property
    def latest_leave_s(self) -> float:
        """When the last device that left this round left (-inf if none did): the round lasts until then."""
        return max((leave.at_s for leave in self._left.values()), default=-math.inf)

    def close(self) -> RoundTurnout:
        """End the round: add it to the totals (leavers' spending is lost work) and return its record."""
        by_cause = {
            cause: tuple(c for c in self._participants if c in self._left and self._left[c].cause is cause)
            for cause in Cause
        }
        record = RoundTurnout(
            tuple(self._participants), tuple(self._offline), by_cause[Cause.DEADLINE], by_cause[Cause.DISCONNECT]
        )
        totals = self.totals
        totals.client_rounds += len(record.participants)
        totals.completed += len(record.completed)
        totals.offline += len(record.offline)
        totals.dropped_deadline += len(record.dropped_deadline)
        totals.dropped_disconnect += len(record.dropped_disconnect)
        totals.rounds_without_update += not record.completed
        for client in self._left:
            totals.lost_work.add(self._spend.get(client, Spend()))
        return record
