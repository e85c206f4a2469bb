"""First-come-first-served: the server takes clients in the order their activations arrive."""

from __future__ import annotations

from collections.abc import Sequence

from fleettune.scheduling.jobs import Job, Schedule, evaluate_order
from fleettune.scheduling.registry import SCHEDULERS


@SCHEDULERS.register("fifo")
def schedule_fifo(jobs: Sequence[Job]) -> Schedule:
    """Serve in order of release (ties by id).

    Ordered by release, the next job is always the earliest remaining one, so the server never idles while
    a client waits (non-delay).
    """
    order = sorted(jobs, key=lambda job: (job.release_s, job.id))
    return evaluate_order(jobs, [job.id for job in order])
