"""Schrage's rule: whenever the server is free, serve the arrived client with the largest tail."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from fleettune.scheduling.jobs import Job, Schedule, evaluate_order, jobs_by_id
from fleettune.scheduling.registry import SCHEDULERS


def schrage_sequence(release: Sequence[float], processing: Sequence[float], tail: Sequence[float]) -> list[int]:
    """Job indices in Schrage order; ties on tail go to the earliest release, then the lowest index."""
    n = len(release)
    by_release = sorted(range(n), key=lambda j: (release[j], j))
    ready: list[tuple[float, float, int]] = []
    sequence: list[int] = []
    free_s = 0.0
    k = 0
    while len(sequence) < n:
        if not ready:
            # Nothing has arrived: the server idles until the next release.
            free_s = max(free_s, release[by_release[k]])
        while k < n and release[by_release[k]] <= free_s:
            j = by_release[k]
            heapq.heappush(ready, (-tail[j], release[j], j))
            k += 1
        _, _, j = heapq.heappop(ready)
        sequence.append(j)
        free_s += processing[j]
    return sequence


@SCHEDULERS.register("schrage")
def schedule_schrage(jobs: Sequence[Job]) -> Schedule:
    """Online largest-tail-first (non-delay); within max processing time of the optimum (Schrage, Carlier 1982)."""
    ordered = sorted(jobs_by_id(jobs).values(), key=lambda job: job.id)
    sequence = schrage_sequence(
        [job.release_s for job in ordered], [job.processing_s for job in ordered], [job.tail_s for job in ordered]
    )
    # Every job Schrage picks has already arrived, so evaluate_order reproduces its start times exactly.
    return evaluate_order(jobs, [ordered[j].id for j in sequence])
