"""The planner on hand-built costs: cases whose right answer is known."""

from __future__ import annotations

import pytest

from fleettune.errors import FleetError, InputError
from fleettune.fleet.feasibility import GIB
from fleettune.planning import plan_fleet
from tests.planning.tables import device, fleet, gib_per_layer, layered, random_instance


def test_a_loaded_server_sends_fast_devices_deeper() -> None:
    """Alone, every device prefers cut 1 (the server is faster than any of them); eight at once queue at
    the server, so the planner moves fast devices deeper and leaves the slow ones at cut 1. The answer
    is the optimum of all 3^8 assignments (checked by enumeration when the case was written)."""
    fast = [device(f"fast{i}", 0.8, mbps=1000.0) for i in range(4)]
    slow = [device(f"slow{i}", 0.1, mbps=1000.0) for i in range(4)]
    costs = layered(4, 1.0, 0.1, gib_per_layer)
    plan = plan_fleet(fleet([*fast, *slow], 1.0), costs, run_rank=16)
    cuts = [d.cut for d in plan.devices]
    assert sorted(cuts[:4]) == [1, 3, 3, 3] and cuts[4:] == [1, 1, 1, 1]  # the fast devices are alike
    assert plan.makespan_s == pytest.approx(0.069927712)
    assert plan.uniform_cut == 1 and plan.uniform_round_s is not None
    assert plan.makespan_s < 0.9 * plan.uniform_round_s
    assert plan.ratio_to_uniform == pytest.approx(plan.makespan_s / plan.uniform_round_s)


def test_a_light_load_keeps_every_device_at_its_own_best_cut() -> None:
    """One device and a fast server: nothing queues, so its best cut alone is the plan."""
    costs = layered(4, 1.0, 0.1, gib_per_layer)
    plan = plan_fleet(fleet([device("only", 0.5, mbps=1000.0)], 50.0), costs, run_rank=16)
    assert [d.cut for d in plan.devices] == [1]
    assert plan.makespan_s == plan.uniform_round_s


def test_memory_forbids_a_cut_that_would_be_faster() -> None:
    """A slow server makes the deepest cut best, but 2.5 GiB holds only cuts 1 and 2 (1 GiB a layer)."""
    devices = [device("small", 1.0, memory_gib=2.5), device("big", 1.0)]
    plan = plan_fleet(fleet(devices, 0.05), layered(4, 1.0, 0.1, gib_per_layer), run_rank=16)
    cuts = {d.device: d.cut for d in plan.devices}
    assert cuts == {"small": 2, "big": 3}
    assert all(d.memory_bytes <= d.budget_bytes for d in plan.devices)
    assert plan.devices[0].budget_bytes == int(2.5 * GIB)
    assert plan.uniform_cut == 2  # the deepest cut both can take


def test_no_uniform_cut_when_the_devices_share_none() -> None:
    """At rank 4 only cut 1 fits the first device; at rank 32 only cut 3 fits the second."""

    def memory(cut: int, rank: int) -> int:
        return GIB if (rank, cut) in ((4, 1), (32, 3)) else 10 * GIB

    devices = [device("shallow", 1.0, memory_gib=1.0, rank=4), device("deep", 1.0, memory_gib=1.0, rank=32)]
    plan = plan_fleet(fleet(devices, 1.0), layered(4, 1.0, 0.1, memory), run_rank=16)
    assert [(d.cut, d.rank) for d in plan.devices] == [(1, 4), (3, 32)]
    assert plan.uniform_cut is None and plan.uniform_round_s is None and plan.ratio_to_uniform is None


def test_a_device_that_fits_no_cut_is_named() -> None:
    devices = [device("roomy", 1.0), device("tiny-sensor", 1.0, memory_gib=0.5)]
    with pytest.raises(FleetError, match=r"tiny-sensor: no cut fits its 0\.50 GiB.*cut 1, rank 16"):
        plan_fleet(fleet(devices, 1.0), layered(4, 1.0, 0.1, gib_per_layer), run_rank=16)


def test_an_unknown_policy_is_an_input_error() -> None:
    with pytest.raises(InputError, match="lifo"):
        plan_fleet(fleet([device("a", 1.0)], 1.0), layered(4, 1.0, 0.1, gib_per_layer), 16, policy="lifo")


@pytest.mark.parametrize("policy", ["fifo", "greedy", "schrage", "optimal"])
def test_never_worse_than_the_best_uniform_cut_or_the_fleet_files_cuts(policy: str) -> None:
    for seed in range(40):
        instance, costs = random_instance(seed, 6)
        plan = plan_fleet(instance, costs, run_rank=16, policy=policy)
        assert plan.uniform_round_s is not None  # cut 1 always fits these devices
        assert plan.makespan_s <= plan.uniform_round_s
        # Every device's entry says "auto": the deepest cut that fits.
        assert plan.written_round_s is not None and plan.makespan_s <= plan.written_round_s


def test_the_plan_is_deterministic() -> None:
    instance, costs = random_instance(3, 8, layers=6)
    first, second = plan_fleet(instance, costs, 16), plan_fleet(instance, costs, 16)
    assert first == second
