"""Cutting a device's work short: where a disconnect or the deadline falls, what was spent by then, and
the timelines of split steps and transfers without the devices that left.

A disconnect is placed by busy time: after `drop_after_s` seconds of the device's own work (waiting
for the server is not work), so a device never disconnects while its activations sit in the server's
queue. In a split step that means the server either never received the activations (the device left
during its forward pass or uplink: the job is not scheduled) or had already answered (the device left
during the downlink or backward pass). The deadline is an absolute moment: whatever would end after it
is cut there, and the server stops working for that device then too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fleettune.runtime.events import Activity, Event
from fleettune.runtime.sim.clock import StepPhases, Timeline, transfers
from fleettune.runtime.sim.participation import Cause, Leave, Spend

StepClock = Callable[[Sequence[StepPhases], int, float], Timeline]
SERVER_WORK = (Activity.ADAPTER_SWITCH, Activity.SERVER_COMPUTE)


@dataclass(frozen=True)
class Span:
    """One interval of a device's own work (virtual seconds) and the bytes it moves."""

    start_s: float
    end_s: float
    activity: Activity | None = None
    uplink_bytes: int = 0
    downlink_bytes: int = 0


def leave_point(spans: Sequence[Span], drop_after_s: float | None, deadline_at: float | None) -> Leave | None:
    """When the device stops if it disconnects after `drop_after_s` busy seconds of `spans` (beyond
    them: not in this work) or at the deadline, whichever comes first; None when it finishes."""
    leave = None
    if drop_after_s is not None:
        done = 0.0
        for span in spans:
            length = span.end_s - span.start_s
            if drop_after_s < done + length:
                leave = Leave(span.start_s + (drop_after_s - done), Cause.DISCONNECT)
                break
            done += length
    end = max((s.end_s for s in spans), default=-math.inf)
    if deadline_at is not None and end > deadline_at and (leave is None or leave.at_s > deadline_at):
        return Leave(deadline_at, Cause.DEADLINE)
    return leave


def spent_until(spans: Sequence[Span], cut_s: float) -> Spend:
    """Busy seconds and bytes of `spans` before `cut_s`; a transfer under way counts its bytes pro rata."""
    spent = Spend()
    for span in spans:
        length = span.end_s - span.start_s
        done = min(span.end_s, cut_s) - span.start_s
        if done <= 0 and length > 0:
            continue
        share = 1.0 if done >= length else done / length
        spent.client_s += max(0.0, done)
        spent.uplink_bytes += math.floor(span.uplink_bytes * share)
        spent.downlink_bytes += math.floor(span.downlink_bytes * share)
    return spent


def _clipped(event: Event, cut_s: float) -> Event | None:
    if event.start_s >= cut_s:
        return None
    if event.end_s <= cut_s:
        return event
    return Event(event.round, event.party, event.activity, event.start_s, cut_s, event.client)


def _span_events(spans: Sequence[Span], party: str, round: int, cut_s: float) -> list[Event]:
    events = []
    for span in spans:
        if span.activity is not None and span.start_s < cut_s and span.end_s > span.start_s:
            events.append(Event(round, party, span.activity, span.start_s, min(span.end_s, cut_s)))
    return events


@dataclass
class Cut:
    """A phase's timeline once the leavers are taken out: `spent` is each leaver's work before leaving."""

    timeline: Timeline
    left: dict[str, Leave] = field(default_factory=dict)
    spent: dict[str, Spend] = field(default_factory=dict)


def _release_spans(p: StepPhases, t0: float, uplink_bytes: int) -> list[Span]:
    forward_end = t0 + p.forward_s
    return [
        Span(t0, forward_end, Activity.CLIENT_FORWARD),
        Span(forward_end, forward_end + p.uplink_s, Activity.UPLINK, uplink_bytes=uplink_bytes),
    ]


def _tail_spans(p: StepPhases, answered_s: float, downlink_bytes: int) -> list[Span]:
    down_end = answered_s + p.downlink_s
    return [
        Span(answered_s, down_end, Activity.DOWNLINK, downlink_bytes=downlink_bytes),
        Span(down_end, down_end + p.backward_s, Activity.CLIENT_BACKWARD),
    ]


def cut_step(
    phases: Sequence[StepPhases],
    clock: StepClock,
    round: int,
    t0: float,
    drop_after_s: Mapping[str, float],
    deadline_at: float | None,
    payload_bytes: Mapping[str, tuple[int, int]],
) -> Cut:
    """One split step timed by `clock` with disconnects (busy seconds into each device's step) and the
    deadline applied; `payload_bytes` holds each device's (activation, gradient) payload sizes. With
    nobody leaving, the timeline is exactly `clock`'s; otherwise the step ends when the devices that
    stay are done and the server has finished the jobs it kept (up to the deadline)."""
    if not drop_after_s and deadline_at is None:
        return Cut(clock(phases, round, t0))
    before: dict[str, Leave] = {}
    for p in phases:
        leave = leave_point(_release_spans(p, t0, 0), drop_after_s.get(p.client), deadline_at)
        if leave is not None:
            before[p.client] = leave  # its activations never fully arrive: the server never sees the job
    served = [p for p in phases if p.client not in before]
    timeline = clock(served, round, t0) if served else Timeline(end_s=t0)
    answered = {e.client: e.end_s for e in timeline.events if e.activity is Activity.SERVER_COMPUTE}
    started: dict[str | None, float] = {}
    for e in timeline.events:
        if e.activity in SERVER_WORK:
            started[e.client] = min(e.start_s, started.get(e.client, math.inf))
    spans = {p.client: _release_spans(p, t0, payload_bytes[p.client][0]) for p in phases}
    for p in served:
        spans[p.client] += _tail_spans(p, answered[p.client], payload_bytes[p.client][1])
    left = dict(before)
    for p in served:
        leave = leave_point(spans[p.client], drop_after_s.get(p.client), deadline_at)
        if leave is not None:
            left[p.client] = leave
    if not left:
        return Cut(timeline)
    events = []
    for e in timeline.events:
        mine = e.client if e.party == "server" else e.party
        leave = left.get(mine) if mine is not None else None
        if leave is None or (e.party == "server" and leave.cause is Cause.DISCONNECT):
            events.append(e)  # the server had answered before the device disconnected
        elif (clipped := _clipped(e, leave.at_s)) is not None:
            events.append(clipped)  # the device's own intervals, and the server's work at the deadline, stop
    spent = {}
    end = t0
    for p in phases:
        leave = left.get(p.client)
        if leave is None:
            end = max(end, answered[p.client] + p.tail_s)
            continue
        if p.client in before:
            events += _span_events(spans[p.client], p.client, round, leave.at_s)
        spent[p.client] = spent_until(spans[p.client], leave.at_s)
        if p.client in answered:
            begun, finished = started[p.client], answered[p.client]
            until = min(finished, leave.at_s) if leave.cause is Cause.DEADLINE else finished
            if until > begun:  # the server worked for it (up to the deadline)
                share = 1.0 if until >= finished else (until - begun) / (finished - begun)
                spent[p.client].server_s = (p.switch_s + p.server_s) * share
                end = max(end, until)
    return Cut(Timeline(events, end), left, spent)


def cut_transfers(
    seconds: Mapping[str, float],
    sizes: Mapping[str, int],
    activity: Activity,
    round: int,
    t0: float,
    drop_after_s: Mapping[str, float],
    deadline_at: float | None,
    starts: Mapping[str, float] | None = None,
) -> Cut:
    """Transfers in parallel on each device's own link (as `transfers`, each from its `starts` time or
    `t0`), of `sizes` bytes each, cut by disconnects (busy seconds into the transfer) and the deadline."""
    if not drop_after_s and deadline_at is None:
        return Cut(transfers(dict(seconds), activity, round, t0, starts=starts))
    upward = activity in (Activity.UPLINK, Activity.ADAPTER_UPLINK)
    left: dict[str, Leave] = {}
    spent: dict[str, Spend] = {}
    events = []
    end = t0
    for client, length in seconds.items():
        size = sizes[client]
        begin = (starts or {}).get(client, t0)
        span = Span(begin, begin + length, activity, size if upward else 0, 0 if upward else size)
        leave = leave_point([span], drop_after_s.get(client), deadline_at)
        cut_s = begin + length if leave is None else leave.at_s
        if length > 0 and cut_s > begin:
            events.append(Event(round, client, activity, begin, cut_s, client))
        if leave is None:
            end = max(end, begin + length)
        else:
            left[client] = leave
            spent[client] = spent_until([span], leave.at_s)
    if not left:
        return Cut(transfers(dict(seconds), activity, round, t0, starts=starts))
    return Cut(Timeline(events, end), left, spent)
