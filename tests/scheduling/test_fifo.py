"""fifo serves clients in order of arrival and never idles while one waits."""

from __future__ import annotations

from hypothesis import given, settings

from fleettune.scheduling import Job, schedule_fifo
from tests.scheduling.checks import assert_non_delay
from tests.scheduling.instances import FOUR_WAY, TOGETHER
from tests.scheduling.strategies import job_sets


def test_fifo_golden_schedule() -> None:
    schedule = schedule_fifo(FOUR_WAY)
    assert schedule.order == ("c", "a", "b")
    assert schedule.start_s == {"c": 0.0, "a": 5.0, "b": 10.0}
    assert schedule.makespan_s == 14.0


def test_fifo_breaks_release_ties_by_id() -> None:
    schedule = schedule_fifo(TOGETHER)
    assert schedule.order == ("a", "b", "c")
    assert schedule.makespan_s == 10.0


@settings(deadline=None)
@given(job_sets(max_size=10))
def test_fifo_is_release_ordered_and_non_delay(jobs: list[Job]) -> None:
    schedule = schedule_fifo(jobs)
    releases = {job.id: job.release_s for job in jobs}
    assert [releases[j] for j in schedule.order] == sorted(releases.values())
    assert_non_delay(jobs, schedule)
