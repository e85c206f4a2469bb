"""The preemptive lower bound on the makespan of any non-preemptive server schedule."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from fleettune.scheduling.jobs import Job, jobs_by_id


def preemptive_makespan(release: Sequence[float], processing: Sequence[float], tail: Sequence[float]) -> float:
    """Makespan of preemptive largest-tail-first: optimal when preemption is allowed, so a bound without it."""
    n = len(release)
    by_release = sorted(range(n), key=lambda j: release[j])
    remaining = list(processing)
    ready: list[tuple[float, int]] = []
    now_s = 0.0
    makespan = 0.0
    k = 0
    while k < n or ready:
        if not ready:
            now_s = max(now_s, release[by_release[k]])
        while k < n and release[by_release[k]] <= now_s:
            j = by_release[k]
            heapq.heappush(ready, (-tail[j], j))
            k += 1
        j = ready[0][1]
        next_release = release[by_release[k]] if k < n else math.inf
        # Compare the remaining work to the gap (not now + work to the release) so that the
        # subtraction below stays strictly positive under rounding.
        if remaining[j] <= next_release - now_s:
            heapq.heappop(ready)
            now_s += remaining[j]
            makespan = max(makespan, now_s + tail[j])
        else:
            # Run until the next arrival, which may preempt this job if its tail is larger.
            remaining[j] -= next_release - now_s
            now_s = next_release
    return makespan


def preemptive_bound(jobs: Sequence[Job]) -> float:
    """Lower bound on every non-preemptive schedule's makespan; equals max over job sets of min r + sum p + min q."""
    ordered = list(jobs_by_id(jobs).values())
    return preemptive_makespan(
        [job.release_s for job in ordered], [job.processing_s for job in ordered], [job.tail_s for job in ordered]
    )
