"""Virtual time of split-training steps: turns each client's phase durations into a timeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fleettune.runtime.events import Activity, Event
from fleettune.scheduling import SCHEDULERS, Job, sharing_schedule


@dataclass(frozen=True)
class StepPhases:
    """Durations (virtual seconds) of one client's share of a training step."""

    client: str
    forward_s: float
    uplink_s: float
    server_s: float  # server forward + backward for this client's batch
    switch_s: float  # loading this client's server-side adapter
    downlink_s: float
    backward_s: float
    after_s: float = 0.0  # the client's adapter upload, when the stretch of work ends with one

    @property
    def release_s(self) -> float:
        return self.forward_s + self.uplink_s

    @property
    def tail_s(self) -> float:
        return self.downlink_s + self.backward_s

    @property
    def job_tail_s(self) -> float:
        """What the server's order must hide once it is done with this client: the downlink and backward and,
        when the step ends with one, the adapter upload (the aggregation waits for the last to arrive)."""
        return self.tail_s + self.after_s


@dataclass
class Timeline:
    events: list[Event] = field(default_factory=list)
    end_s: float = 0.0


def _client_events(p: StepPhases, round: int, t0: float, start: float, served: float, done: float) -> list[Event]:
    """Events of one client's step given when the server started and finished its work."""
    fwd_end = t0 + p.forward_s
    arrive = fwd_end + p.uplink_s
    down_end = done + p.downlink_s
    events = [
        Event(round, p.client, Activity.CLIENT_FORWARD, t0, fwd_end),
        Event(round, p.client, Activity.UPLINK, fwd_end, arrive),
        Event(round, "server", Activity.SERVER_QUEUE, arrive, start, p.client),
    ]
    if p.switch_s > 0:
        events.append(Event(round, "server", Activity.ADAPTER_SWITCH, start, start + p.switch_s, p.client))
    events += [
        Event(round, "server", Activity.SERVER_COMPUTE, served, done, p.client),
        Event(round, p.client, Activity.DOWNLINK, done, down_end),
        Event(round, p.client, Activity.CLIENT_BACKWARD, down_end, down_end + p.backward_s),
    ]
    return events


def one_server_step(phases: Sequence[StepPhases], policy: str, round: int, t0: float) -> Timeline:
    """Clients compute in parallel; one server serves them one at a time in `policy`'s order, chosen on
    each job's tail with its adapter upload (`job_tail_s`). The step ends with the last backward."""
    jobs = [Job(p.client, p.release_s, p.switch_s + p.server_s, p.job_tail_s) for p in phases]
    schedule = SCHEDULERS.get(policy)(jobs)
    timeline = Timeline(end_s=t0)
    for p in phases:
        start = t0 + schedule.start_s[p.client]
        done = t0 + schedule.completion_s[p.client]
        timeline.events += _client_events(p, round, t0, start, start + p.switch_s, done)
        timeline.end_s = max(timeline.end_s, done + p.tail_s)
    return timeline


def shared_processor_step(phases: Sequence[StepPhases], round: int, t0: float) -> Timeline:
    """Clients in parallel; the server's per-client copies share it equally (processor sharing)."""
    jobs = [Job(p.client, p.release_s, p.server_s, p.job_tail_s) for p in phases]
    completion = sharing_schedule(jobs).completion_s
    timeline = Timeline(end_s=t0)
    for p in phases:
        arrive = t0 + p.release_s
        done = t0 + completion[p.client]
        timeline.events += _client_events(p, round, t0, arrive, arrive, done)
        timeline.end_s = max(timeline.end_s, done + p.tail_s)
    return timeline


def transfers(
    seconds: dict[str, float],
    activity: Activity,
    round: int,
    t0: float,
    party_of: dict[str, str] | None = None,
    starts: Mapping[str, float] | None = None,
) -> Timeline:
    """Transfers that run in parallel on each client's own link, each from its client's `starts` time
    (a client's own step may have ended before `t0`, the moment every step had) or else from `t0`; the
    timeline ends when the last one has, and not before `t0`."""
    begin = {c: (starts or {}).get(c, t0) for c in seconds}
    party = party_of or {}
    events = [Event(round, party.get(c, c), activity, begin[c], begin[c] + s, c) for c, s in seconds.items() if s > 0]
    return Timeline(events, max([t0, *(begin[c] + s for c, s in seconds.items())]))


def server_work(seconds: float, activity: Activity, round: int, t0: float) -> Timeline:
    return Timeline([Event(round, "server", activity, t0, t0 + seconds)] if seconds > 0 else [], t0 + seconds)
