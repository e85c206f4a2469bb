"""processor_sharing: egalitarian sharing of the server among released, unfinished jobs."""

from __future__ import annotations

import math

from hypothesis import given, settings

from fleettune.scheduling import Job, processor_sharing, schedule_fifo, sharing_schedule
from tests.scheduling.instances import FOUR_WAY
from tests.scheduling.strategies import job_sets


def test_two_jobs_released_together_share_then_the_longer_runs_alone() -> None:
    # Both at rate 1/2 until the short one's 1 s of work is done at 2; the long one has 2 s left, alone.
    jobs = [Job("short", 0, 1, 0), Job("long", 0, 3, 0)]
    assert processor_sharing(jobs) == {"short": 2.0, "long": 4.0}


def test_a_late_arrival_slows_the_job_in_service() -> None:
    # a alone 0-1 (1 s left); then a and b at rate 1/2 each with 1 s of work: both done at 3.
    jobs = [Job("a", 0, 2, 0), Job("b", 1, 1, 0)]
    assert processor_sharing(jobs) == {"a": 3.0, "b": 3.0}


def test_processor_sharing_golden_three_clients() -> None:
    # c alone 0-1; c and a share 1-4 (1.5 s each); with b, three share until b's 1 s is done at 7;
    # c then has 1.5 s left at rate 1/2 (done at 10) and a has 1 s left alone (done at 11).
    assert processor_sharing(FOUR_WAY) == {"b": 7.0, "c": 10.0, "a": 11.0}


def test_a_job_without_work_completes_on_arrival() -> None:
    assert processor_sharing([Job("a", 0, 4, 0), Job("b", 1, 0, 0)]) == {"b": 1.0, "a": 4.0}


def test_idle_gaps_between_busy_periods() -> None:
    assert processor_sharing([Job("a", 0, 1, 0), Job("b", 5, 2, 0)]) == {"a": 1.0, "b": 7.0}


@settings(deadline=None)
@given(job_sets(max_size=10, whole=False))
def test_processor_sharing_conserves_work(jobs: list[Job]) -> None:
    completion_s = processor_sharing(jobs)
    assert set(completion_s) == {job.id for job in jobs}
    for job in jobs:
        assert completion_s[job.id] >= job.release_s + job.processing_s - 1e-9
    if jobs:
        # Any work-conserving server, fifo included, ends its last busy period at the same instant.
        busy_end_s = max(schedule_fifo(jobs).completion_s.values())
        assert math.isclose(max(completion_s.values()), busy_end_s, rel_tol=1e-9, abs_tol=1e-9)


def test_sharing_as_a_schedule_orders_by_completion_and_ends_with_the_last_tail() -> None:
    # completions b 7, c 10, a 11 (above); FOUR_WAY's tails decide the makespan
    schedule = sharing_schedule(FOUR_WAY)
    assert schedule.order == ("b", "c", "a")
    assert schedule.completion_s == processor_sharing(FOUR_WAY)
    assert schedule.start_s == {j.id: j.release_s for j in FOUR_WAY}
    assert schedule.makespan_s == max(schedule.completion_s[j.id] + j.tail_s for j in FOUR_WAY)
    assert sharing_schedule([]).makespan_s == 0.0
