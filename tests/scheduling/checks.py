"""Assertions about schedules shared by the policy tests."""

from __future__ import annotations

from collections.abc import Sequence

from fleettune.scheduling import Job, Schedule


def assert_non_delay(jobs: Sequence[Job], schedule: Schedule) -> None:
    """The server never idles while an unserved job has arrived."""
    release = {job.id: job.release_s for job in jobs}
    free_s = 0.0
    for k, job_id in enumerate(schedule.order):
        start = schedule.start_s[job_id]
        if start > free_s:
            # Idle from free_s to start: nothing still to serve may have arrived before start.
            assert min(release[j] for j in schedule.order[k:]) == start
        free_s = schedule.completion_s[job_id]
