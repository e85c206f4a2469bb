"""preemptive_bound: the preemptive largest-tail-first makespan, equal to the best subset bound h(J)."""

from __future__ import annotations

from hypothesis import given, settings

from fleettune.scheduling import SCHEDULERS, Job, preemptive_bound
from tests.scheduling.brute_force import best_subset_bound
from tests.scheduling.instances import FOUR_WAY, NON_DELAY_TRAP
from tests.scheduling.strategies import job_sets


def test_preemptive_bound_golden() -> None:
    # c 0-1, a 1-4, b 4-5 (8), a 5-7 (9), c 7-11 (11).
    assert preemptive_bound(FOUR_WAY) == 11.0
    # a 0-1, b preempts it: b 1-2 (102), a 2-11 (11).
    assert preemptive_bound(NON_DELAY_TRAP) == 102.0


def test_preemptive_bound_of_no_jobs_is_zero() -> None:
    assert preemptive_bound([]) == 0.0


@settings(deadline=None)
@given(job_sets(max_size=8))
def test_preemptive_bound_equals_max_over_subsets(jobs: list[Job]) -> None:
    assert preemptive_bound(jobs) == best_subset_bound(jobs)


@settings(deadline=None)
@given(job_sets(max_size=12))
def test_no_policy_beats_the_preemptive_bound(jobs: list[Job]) -> None:
    bound = preemptive_bound(jobs)
    for name in SCHEDULERS.names():
        assert SCHEDULERS.get(name)(jobs).makespan_s >= bound, name
