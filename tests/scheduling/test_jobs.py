"""Jobs validate their times; evaluate_order runs a fixed order, waiting for each next job."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings

from fleettune.scheduling import Job, evaluate_order
from tests.scheduling.instances import FOUR_WAY
from tests.scheduling.strategies import job_sets


def test_job_stores_times_as_floats() -> None:
    job = Job("a", release_s=1, processing_s=2, tail_s=0)
    assert (job.release_s, job.processing_s, job.tail_s) == (1.0, 2.0, 0.0)
    assert isinstance(job.release_s, float)
    assert job == Job("a", 1.0, 2.0, 0.0)


@pytest.mark.parametrize("field", ["release_s", "processing_s", "tail_s"])
@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, True, "1"])
def test_job_rejects_a_negative_or_non_finite_time_naming_the_field(field: str, bad: object) -> None:
    times: dict[str, object] = {"release_s": 0.0, "processing_s": 1.0, "tail_s": 0.0, field: bad}
    with pytest.raises(ValueError, match=f"job 'a': {field} must be a finite number >= 0"):
        Job("a", **times)  # type: ignore[arg-type]


def test_job_rejects_an_empty_id() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        Job("", 0, 1, 0)


def test_evaluate_order_waits_for_the_next_job_of_a_fixed_order() -> None:
    schedule = evaluate_order(FOUR_WAY, ["b", "a", "c"])
    assert schedule.order == ("b", "a", "c")
    # The server idles 0-4 for b although a and c are waiting.
    assert schedule.start_s == {"b": 4.0, "a": 5.0, "c": 10.0}
    assert schedule.completion_s == {"b": 5.0, "a": 10.0, "c": 15.0}
    assert schedule.makespan_s == 15.0


def test_evaluate_order_of_no_jobs_is_empty() -> None:
    schedule = evaluate_order([], [])
    assert schedule.order == ()
    assert schedule.makespan_s == 0.0


@pytest.mark.parametrize("order", [["a", "b"], ["a", "b", "c", "c"], ["a", "b", "x"], ["a", "a", "b"]])
def test_evaluate_order_rejects_an_order_that_is_not_a_permutation(order: list[str]) -> None:
    with pytest.raises(ValueError, match="every job id exactly once"):
        evaluate_order(FOUR_WAY, order)


def test_jobs_with_one_id_twice_are_rejected() -> None:
    with pytest.raises(ValueError, match="'a' appears more than once"):
        evaluate_order([Job("a", 0, 1, 0), Job("a", 1, 1, 0)], ["a", "a"])


@settings(deadline=None)
@given(job_sets(max_size=8, whole=False))
def test_evaluate_order_respects_releases_without_overlap_or_needless_idling(jobs: list[Job]) -> None:
    order = [job.id for job in reversed(jobs)]
    schedule = evaluate_order(jobs, order)
    by_id = {job.id: job for job in jobs}
    previous_completion = 0.0
    for job_id in order:
        job = by_id[job_id]
        start = schedule.start_s[job_id]
        assert start >= job.release_s
        assert start >= previous_completion  # one job at a time
        assert start == max(job.release_s, previous_completion)  # idle only while waiting for this job
        assert schedule.completion_s[job_id] == start + job.processing_s
        previous_completion = schedule.completion_s[job_id]
    assert schedule.makespan_s == max((schedule.completion_s[j.id] + j.tail_s for j in jobs), default=0.0)
