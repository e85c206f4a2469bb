"""Egalitarian processor sharing: completion times when every waiting client gets an equal slice of the server."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from fleettune.scheduling.jobs import Job, Schedule, jobs_by_id

SHARING = "sharing"  # the name the planner knows processor sharing by (not a policy a shared server can run)


def processor_sharing(jobs: Sequence[Job]) -> dict[str, float]:
    """Completion time of each job when the server splits equally among all released, unfinished jobs.

    This is how SplitFed-V1's per-client server copies share one GPU. Tails play no part here.
    """
    arrivals = sorted(jobs_by_id(jobs).values(), key=lambda job: (job.release_s, job.id))
    # Virtual time advances by 1/k per second while k jobs share the server: every job in service has then
    # received the same work since it arrived, so a job finishes when virtual time reaches its arrival value
    # plus its work, and one heap keyed on that value replaces updating every job's remaining work.
    in_service: list[tuple[float, str]] = []
    completion_s: dict[str, float] = {}
    now_s = 0.0
    virtual = 0.0
    k = 0
    while k < len(arrivals) or in_service:
        if not in_service:
            now_s = max(now_s, arrivals[k].release_s)
        while k < len(arrivals) and arrivals[k].release_s <= now_s:
            heapq.heappush(in_service, (virtual + arrivals[k].processing_s, arrivals[k].id))
            k += 1
        finish_virtual, job_id = in_service[0]
        finish_s = now_s + (finish_virtual - virtual) * len(in_service)
        next_arrival_s = arrivals[k].release_s if k < len(arrivals) else math.inf
        if finish_s <= next_arrival_s:
            heapq.heappop(in_service)
            completion_s[job_id] = finish_s
            now_s, virtual = finish_s, finish_virtual
        else:
            virtual += (next_arrival_s - now_s) / len(in_service)
            now_s = next_arrival_s
    return completion_s


def sharing_schedule(jobs: Sequence[Job]) -> Schedule:
    """Processor sharing as a `Schedule`: every job is served from its release, the order is the order of
    completion, and the step ends with the last completion plus its tail."""
    completion_s = processor_sharing(jobs)
    by_id = jobs_by_id(jobs)
    order = tuple(sorted(completion_s, key=lambda job_id: (completion_s[job_id], job_id)))
    return Schedule(
        order=order,
        start_s={job_id: by_id[job_id].release_s for job_id in order},
        completion_s=completion_s,
        makespan_s=max((completion_s[j] + by_id[j].tail_s for j in order), default=0.0),
    )
