"""The seed paper's ordering: longest client backward first, as a fixed order."""

from __future__ import annotations

from collections.abc import Sequence

from fleettune.scheduling.jobs import Job, Schedule, evaluate_order
from fleettune.scheduling.registry import SCHEDULERS


@SCHEDULERS.register("greedy")
def schedule_greedy(jobs: Sequence[Job]) -> Schedule:
    """Serve in decreasing tail (ties: earliest release, then id), waiting for each next client in that order.

    A job only carries its tail (downlink + client backward), so "longest client backward first" becomes
    largest tail first: Jackson's rule applied as a fixed order. It is optimal when all clients arrive
    together, but waiting for a late client while others sit ready can make it worse than ``fifo``; the
    online version of the same rule is ``schrage``.
    """
    order = sorted(jobs, key=lambda job: (-job.tail_s, job.release_s, job.id))
    return evaluate_order(jobs, [job.id for job in order])
