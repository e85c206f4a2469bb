"""schrage: online largest-tail-first, non-delay, within max p of the optimum."""

from __future__ import annotations

from hypothesis import given, settings

from fleettune.scheduling import Job, schedule_greedy, schedule_optimal, schedule_schrage
from tests.scheduling.checks import assert_non_delay
from tests.scheduling.instances import FOUR_WAY, NON_DELAY_TRAP, TOGETHER
from tests.scheduling.strategies import job_sets, together_job_sets


def test_schrage_golden_schedule() -> None:
    schedule = schedule_schrage(FOUR_WAY)
    assert schedule.order == ("c", "b", "a")
    assert schedule.start_s == {"c": 0.0, "b": 5.0, "a": 6.0}
    assert schedule.makespan_s == 13.0


def test_schrage_never_idles_so_it_misses_an_urgent_late_client() -> None:
    schedule = schedule_schrage(NON_DELAY_TRAP)
    assert schedule.order == ("a", "b")
    assert schedule.makespan_s == 111.0
    assert schedule_optimal(NON_DELAY_TRAP).makespan_s == 102.0  # 111 <= 102 + max p = 112


def test_schrage_breaks_tail_ties_by_release_then_id() -> None:
    jobs = [Job("z", 0, 1, 0), Job("y", 0.5, 1, 5), Job("x", 0.5, 1, 5), Job("w", 0.2, 1, 5)]
    # z is alone at 0; at 1 the others have arrived with equal tails: w (earliest), then x before y.
    assert schedule_schrage(jobs).order == ("z", "w", "x", "y")


def test_schrage_equals_jackson_on_common_releases_golden() -> None:
    assert schedule_schrage(TOGETHER).order == ("b", "c", "a")


@settings(deadline=None)
@given(job_sets(max_size=10))
def test_schrage_is_non_delay(jobs: list[Job]) -> None:
    assert_non_delay(jobs, schedule_schrage(jobs))


@settings(deadline=None)
@given(job_sets(max_size=8))
def test_schrage_is_within_max_processing_time_of_optimal(jobs: list[Job]) -> None:
    optimal = schedule_optimal(jobs).makespan_s
    longest = max((job.processing_s for job in jobs), default=0.0)
    assert optimal <= schedule_schrage(jobs).makespan_s <= optimal + longest


@settings(deadline=None)
@given(together_job_sets())
def test_schrage_greedy_and_optimal_agree_on_common_releases(jobs: list[Job]) -> None:
    makespans = {schedule(jobs).makespan_s for schedule in (schedule_schrage, schedule_greedy, schedule_optimal)}
    assert len(makespans) == 1
