"""A run's rounds in the planner's terms: plain steps, and every I rounds a step that ends with the adapters'
round trip.

With `local_steps` L and aggregation every `aggregate_every` I rounds, a period of I rounds holds I x L steps.
The first I x L - 1 are plain: each lasts the makespan of the devices' jobs under the server's policy. The last
ends with every device sending its client-side adapter part, each as soon as its own backward is done, so the
server's order is chosen on tails that include the upload; the server averages once the last part is in, and
sends each device its part back over its own link. That step lasts the makespan on the upload-extended tails
plus the longest download. The planner's score is the mean over the period: seconds per round. The averaging
itself (a few FLOPs per adapter value on the server) is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleettune.planning.bound import makespan_lower_bound
from fleettune.planning.costs import Option, plain_job
from fleettune.scheduling import Job, Policy


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


def round_time(chosen: Sequence[Option], policy: Policy, cadence: Cadence | None) -> RoundTime:
    """Seconds per round of the devices at `chosen` options, the server ordering them by `policy`; with no
    `cadence`, one plain step is the round."""
    plain_jobs = [plain_job(o) for o in chosen]
    plain = policy(plain_jobs)
    plain_ends = sum(plain.completion_s[j.id] + j.tail_s for j in plain_jobs)
    if cadence is None:
        return RoundTime(plain.makespan_s, None, plain.makespan_s, plain_ends)
    last_jobs = [aggregating_job(o) for o in chosen]
    last = policy(last_jobs)
    download = max((o.download_s for o in chosen), default=0.0)
    aggregating = last.makespan_s + download
    last_ends = sum(last.completion_s[j.id] + j.tail_s for j in last_jobs)
    rounds = cadence.aggregate_every
    return RoundTime(
        plain.makespan_s,
        aggregating,
        (cadence.plain_steps * plain.makespan_s + aggregating) / rounds,
        (cadence.plain_steps * plain_ends + last_ends) / rounds,
    )


def alone_round_s(option: Option, cadence: Cadence | None) -> float:
    """Seconds per round of one device with the server to itself."""
    job = plain_job(option)
    path = job.release_s + job.processing_s + job.tail_s
    if cadence is None:
        return path
    return (cadence.plain_steps * path + path + option.upload_s + option.download_s) / cadence.aggregate_every


def round_lower_bound(options: Sequence[Sequence[Option]], cadence: Cadence | None) -> float:
    """No assignment of `options` has fewer seconds per round than this, under any policy: each kind of step
    is bounded apart (`makespan_lower_bound`), and the download by the device whose quickest is the longest."""
    plain = makespan_lower_bound(options)
    if cadence is None or not options:
        return plain
    last = makespan_lower_bound(options, aggregating_job)
    download = max(min(o.download_s for o in device) for device in options)
    return (cadence.plain_steps * plain + last + download) / cadence.aggregate_every
