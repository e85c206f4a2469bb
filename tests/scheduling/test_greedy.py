"""greedy is Jackson's rule (largest tail first) as a fixed order that waits for its next client."""

from __future__ import annotations

from hypothesis import given, settings

from fleettune.scheduling import Job, schedule_fifo, schedule_greedy, schedule_optimal
from tests.scheduling.instances import FOUR_WAY, TOGETHER
from tests.scheduling.strategies import job_sets, together_job_sets


def test_greedy_waits_for_its_next_client_and_loses_to_fifo() -> None:
    schedule = schedule_greedy(FOUR_WAY)
    assert schedule.order == ("b", "a", "c")
    assert schedule.start_s == {"b": 4.0, "a": 5.0, "c": 10.0}
    assert schedule.makespan_s == 15.0
    assert schedule_fifo(FOUR_WAY).makespan_s == 14.0


def test_greedy_is_optimal_when_all_clients_arrive_together() -> None:
    schedule = schedule_greedy(TOGETHER)
    assert schedule.order == ("b", "c", "a")
    assert schedule.makespan_s == 8.0


def test_greedy_breaks_tail_ties_by_release_then_id() -> None:
    jobs = [Job("z", 0, 1, 5), Job("y", 2, 1, 5), Job("x", 2, 1, 5)]
    assert schedule_greedy(jobs).order == ("z", "x", "y")


@settings(deadline=None)
@given(job_sets(max_size=10))
def test_greedy_order_is_by_decreasing_tail(jobs: list[Job]) -> None:
    tails = {job.id: job.tail_s for job in jobs}
    order = schedule_greedy(jobs).order
    assert [tails[j] for j in order] == sorted(tails.values(), reverse=True)


@settings(deadline=None)
@given(together_job_sets())
def test_jackson_rule_is_optimal_for_common_releases(jobs: list[Job]) -> None:
    assert schedule_greedy(jobs).makespan_s == schedule_optimal(jobs).makespan_s
