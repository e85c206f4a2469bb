"""Egalitarian processor sharing: completion times when every waiting client gets an equal slice of the server."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from fleettune.scheduling.jobs import Job, jobs_by_id


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
