"""A run's rounds in the planner's terms: plain steps, and every I rounds a step that ends with the adapters'
round trip.

With `local_steps` L and aggregation every `aggregate_every` I rounds, a period of I rounds holds I x L steps.
The first I x L - 1 are plain: each lasts the makespan of the devices' jobs under the server's policy. The last
ends with every device sending its client-side adapter part, each as soon as its own backward is done, so the
server's order is chosen on tails that include the upload; the server averages once the last part is in, and
sends each device its part back over its own link. That step lasts the makespan on the upload-extended tails
plus the longest download. The planner's score is the mean over the period: seconds per round. The averaging
itself (a few FLOPs per adapter value on the server) is left out.

`sl` and `cpsl` (`Turns`) have no aggregation cadence: each round the clusters take turns, one after the other.
A turn begins with the adapter's hand-off, each member's part sent down its own link, and the members' steps
start once the last part is in; then the members take `local_steps` steps together against the server (which
serves them first come, first served), and the turn ends when the last member's adapter part, sent as soon as
its last backward is done, has arrived. A round is the sum of its turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from fleettune.fleet.profiles import Device
from fleettune.planning.bound import makespan_lower_bound
from fleettune.planning.costs import Option, plain_job
from fleettune.scheduling import Job, Policy
from fleettune.schemes.split.sequential import CLUSTER_RULES, turn_clusters


@dataclass(frozen=True)
class Cadence:
    """How a run's steps repeat: `local_steps` a round, the adapters averaged every `aggregate_every` rounds."""

    aggregate_every: int = 1
    local_steps: int = 1

    def __post_init__(self) -> None:
        if self.aggregate_every < 1 or self.local_steps < 1:
            raise ValueError(f"a cadence needs aggregate_every and local_steps >= 1, got {self}")

    @property
    def plain_steps(self) -> int:
        """Steps of a period that end without an aggregation."""
        return self.aggregate_every * self.local_steps - 1


@dataclass(frozen=True)
class Turns:
    """How `sl` and `cpsl` rounds go: clusters of at most `cluster_size` devices (`cluster_by` "speed" or "cut",
    as the run forms them; `sl` is clusters of one) take turns, each turn `local_steps` steps long."""

    cluster_size: int = 1
    cluster_by: str = "speed"
    local_steps: int = 1

    def __post_init__(self) -> None:
        if self.cluster_size < 1 or self.local_steps < 1 or self.cluster_by not in CLUSTER_RULES:
            raise ValueError(f"turns need cluster_size and local_steps >= 1 and a rule in {CLUSTER_RULES}, got {self}")


Rounds = Cadence | Turns | None  # how a run's steps make rounds; None: one plain step is the round


@dataclass(frozen=True)
class RoundTime:
    """What one assignment of options gives: the plain step's makespan, the step that ends with the adapters'
    round trip (None when planning a plain step only), the mean seconds per round, and the sum over jobs of
    completion + tail in the same proportions (a tie-break)."""

    step_s: float
    aggregating_s: float | None
    round_s: float
    ends_s: float


def aggregating_job(option: Option) -> Job:
    """The device's turn at the server in a step that ends with its adapter upload."""
    job = plain_job(option)
    return Job(job.id, job.release_s, job.processing_s, job.tail_s + option.upload_s)


def round_time(
    chosen: Sequence[Option], policy: Policy, rounds: Rounds, devices: Sequence[Device] | None = None
) -> RoundTime:
    """Seconds per round of the devices at `chosen` options, the server ordering them by `policy`; with no
    `rounds`, one plain step is the round. `Turns` need the `devices` (in the options' order) to form clusters."""
    if isinstance(rounds, Turns):
        if devices is None:
            raise ValueError("turns need the devices to form their clusters")
        return _turns_time(chosen, policy, rounds, devices)
    plain_jobs = [plain_job(o) for o in chosen]
    plain = policy(plain_jobs)
    plain_ends = sum(plain.completion_s[j.id] + j.tail_s for j in plain_jobs)
    if rounds is None:
        return RoundTime(plain.makespan_s, None, plain.makespan_s, plain_ends)
    last_jobs = [aggregating_job(o) for o in chosen]
    last = policy(last_jobs)
    download = max((o.download_s for o in chosen), default=0.0)
    aggregating = last.makespan_s + download
    last_ends = sum(last.completion_s[j.id] + j.tail_s for j in last_jobs)
    every = rounds.aggregate_every
    return RoundTime(
        plain.makespan_s,
        aggregating,
        (rounds.plain_steps * plain.makespan_s + aggregating) / every,
        (rounds.plain_steps * plain_ends + last_ends) / every,
    )


@dataclass(frozen=True)
class _Seat:
    """A device at the cut an option gives it, as `turn_clusters` sees it."""

    device: Device
    index: int  # the device's place in the fleet


def turn_members(chosen: Sequence[Option], turns: Turns, devices: Sequence[Device]) -> list[list[int]]:
    """The devices (their places in the fleet) of each cluster, in turn order, each at its option's cut."""
    seats = [_Seat(replace(d, cut_layer=o.cut), i) for i, (d, o) in enumerate(zip(devices, chosen, strict=True))]
    return [[seat.index for seat in cluster] for cluster in turn_clusters(seats, turns.cluster_size, turns.cluster_by)]


def _turns_time(chosen: Sequence[Option], policy: Policy, turns: Turns, devices: Sequence[Device]) -> RoundTime:
    """A round of turns: per cluster, the longest hand-off download, `local_steps - 1` plain steps and the step
    whose tails end with the uploads. The plain step of the result is the round itself."""
    round_s = ends_s = 0.0
    for places in turn_members(chosen, turns, devices):
        members = [chosen[i] for i in places]
        plain_jobs, last_jobs = [plain_job(o) for o in members], [aggregating_job(o) for o in members]
        plain, last = policy(plain_jobs), policy(last_jobs)
        download = max(o.download_s for o in members)
        round_s += download + (turns.local_steps - 1) * plain.makespan_s + last.makespan_s
        ends_s += (turns.local_steps - 1) * sum(plain.completion_s[j.id] + j.tail_s for j in plain_jobs)
        ends_s += sum(last.completion_s[j.id] + j.tail_s for j in last_jobs)
    return RoundTime(round_s, None, round_s, ends_s)


def alone_round_s(option: Option, rounds: Rounds) -> float:
    """Seconds per round of one device with the server to itself (for `Turns`, its own turn)."""
    job = plain_job(option)
    path = job.release_s + job.processing_s + job.tail_s
    if rounds is None:
        return path
    if isinstance(rounds, Turns):
        return option.download_s + rounds.local_steps * path + option.upload_s
    return (rounds.plain_steps * path + path + option.upload_s + option.download_s) / rounds.aggregate_every


def round_lower_bound(
    options: Sequence[Sequence[Option]], rounds: Rounds, devices: Sequence[Device] | None = None
) -> float:
    """No assignment of `options` has fewer seconds per round than this, under any policy: each kind of step
    is bounded apart (`makespan_lower_bound`), and the download by the device whose quickest is the longest.
    With `Turns`, every device's turn lasts at least its own quickest turn alone: clusters by speed do not
    depend on the cuts, so the bound sums each cluster's longest; clusters by cut may, so it is the longest
    device's, or the sum over devices spread over clusters of the largest size, whichever is more."""
    if isinstance(rounds, Turns):
        if not options:
            return 0.0
        alone = [min(alone_round_s(o, rounds) for o in device) for device in options]
        if rounds.cluster_by == "speed" and devices is not None:
            clusters = turn_clusters([_Seat(d, i) for i, d in enumerate(devices)], rounds.cluster_size)
            return sum(max(alone[seat.index] for seat in cluster) for cluster in clusters)
        return max(max(alone), sum(alone) / rounds.cluster_size)
    plain = makespan_lower_bound(options)
    if rounds is None or not options:
        return plain
    last = makespan_lower_bound(options, aggregating_job)
    download = max(min(o.download_s for o in device) for device in options)
    return (rounds.plain_steps * plain + last + download) / rounds.aggregate_every
