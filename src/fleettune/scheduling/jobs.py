"""Server jobs of one training step and the schedule that serving them in a fixed order produces."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    """One client's turn at the server: ready at ``release_s``, served for ``processing_s``, done ``tail_s`` later.

    ``release_s`` is client forward + uplink, ``processing_s`` the server forward+backward (+ adapter switch),
    ``tail_s`` the downlink + client backward; all in seconds from the start of the step.
    """

    id: str
    release_s: float
    processing_s: float
    tail_s: float

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"job id must be a non-empty string, got {self.id!r}")
        for field in ("release_s", "processing_s", "tail_s"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"job {self.id!r}: {field} must be a finite number >= 0, got {value!r}")
            # Ints are accepted for convenience but stored as floats so equal jobs compare equal.
            object.__setattr__(self, field, float(value))


@dataclass(frozen=True)
class Schedule:
    """Who the server serves when: ``makespan_s`` is the end of the step, max over jobs of completion + tail."""

    order: tuple[str, ...]
    start_s: dict[str, float]
    completion_s: dict[str, float]
    makespan_s: float


def jobs_by_id(jobs: Sequence[Job]) -> dict[str, Job]:
    """The jobs keyed by id; two jobs with one id are a ValueError (schedules are keyed by id)."""
    by_id: dict[str, Job] = {}
    for job in jobs:
        if job.id in by_id:
            raise ValueError(f"job id {job.id!r} appears more than once")
        by_id[job.id] = job
    return by_id


def run_sequence(
    release: Sequence[float], processing: Sequence[float], sequence: Sequence[int]
) -> tuple[list[float], list[float]]:
    """Start and completion times, by position in ``sequence``, of a server that waits for each next job."""
    starts: list[float] = []
    completions: list[float] = []
    free_s = 0.0
    for j in sequence:
        start = max(release[j], free_s)
        free_s = start + processing[j]
        starts.append(start)
        completions.append(free_s)
    return starts, completions


def evaluate_order(jobs: Sequence[Job], order: Sequence[str]) -> Schedule:
    """Serve ``jobs`` non-preemptively in ``order``, each starting at max(its release, previous completion).

    A fixed order waits for its next job even when another one has already arrived.
    """
    by_id = jobs_by_id(jobs)
    if len(order) != len(by_id) or set(order) != set(by_id):
        raise ValueError(f"order must list every job id exactly once; jobs {sorted(by_id)}, order {list(order)}")
    sequenced = [by_id[job_id] for job_id in order]
    starts, completions = run_sequence(
        [job.release_s for job in sequenced], [job.processing_s for job in sequenced], range(len(sequenced))
    )
    makespan = max((c + job.tail_s for c, job in zip(completions, sequenced, strict=True)), default=0.0)
    return Schedule(
        order=tuple(order),
        start_s=dict(zip(order, starts, strict=True)),
        completion_s=dict(zip(order, completions, strict=True)),
        makespan_s=makespan,
    )


def sequence_makespan(
    release: Sequence[float], processing: Sequence[float], tail: Sequence[float], sequence: Sequence[int]
) -> float:
    """max(C_j + q_j) of ``sequence`` (job indices), with the same arithmetic as ``evaluate_order``."""
    _, completions = run_sequence(release, processing, sequence)
    return max((c + tail[j] for c, j in zip(completions, sequence, strict=True)), default=0.0)
