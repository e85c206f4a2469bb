"""compare_policies: every registered policy's makespan and the bound, side by side."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from fleettune.errors import RegistryError
from fleettune.scheduling import SCHEDULERS, Job, compare_policies
from tests.scheduling.instances import FOUR_WAY
from tests.scheduling.strategies import job_sets


def test_registered_policy_names() -> None:
    assert SCHEDULERS.names() == ["fifo", "greedy", "optimal", "schrage"]


def test_unknown_policy_lists_the_known_ones() -> None:
    with pytest.raises(RegistryError, match="expected one of: fifo, greedy, optimal, schrage"):
        SCHEDULERS.get("lifo")


def test_four_policies_differ_on_the_golden_instance() -> None:
    assert compare_policies(FOUR_WAY) == {
        "fifo": 14.0,
        "greedy": 15.0,
        "schrage": 13.0,
        "optimal": 12.0,
        "bound": 11.0,
    }


@settings(deadline=None)
@given(job_sets(max_size=10))
def test_no_policy_beats_optimal_and_optimal_respects_the_bound(jobs: list[Job]) -> None:
    makespans = compare_policies(jobs)
    assert set(makespans) == {*SCHEDULERS.names(), "bound"}
    assert all(makespan >= makespans["optimal"] for name, makespan in makespans.items() if name != "bound")
    assert makespans["optimal"] >= makespans["bound"]
