"""LoRA ranks in a plan: "auto" takes the largest candidate that fits at the chosen cut; others keep theirs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fleettune.errors import ConfigError, FleetError
from fleettune.fleet.feasibility import GIB
from fleettune.planning import plan_fleet
from fleettune.planning.plan import check_rank_candidates, device_options
from tests.planning.tables import device, fleet, gib_per_layer, layered

COSTS = layered(4, 1.0, 0.1, gib_per_layer)  # cut GiB plus rank / 64 GiB


def test_auto_rank_is_the_largest_candidate_that_fits_each_cut() -> None:
    """2.2 GiB: cut 1 fits rank 32 (1.5 GiB), cut 2 only rank 8 (2.125 GiB), cut 3 nothing."""
    auto = device("auto", 1.0, memory_gib=2.2, rank="auto")
    options = device_options(auto, COSTS, fleet([auto], 1.0).server, 16, (4, 8, 16, 32), 0.0)
    assert [(o.cut, o.rank) for o in options] == [(1, 32), (2, 8)]
    assert [o.memory_bytes for o in options] == [gib_per_layer(1, 32), gib_per_layer(2, 8)]


def test_fixed_and_unset_ranks_limit_the_cuts_by_their_own_memory() -> None:
    own = device("own", 1.0, memory_gib=2.2, rank=4)  # cut 2 at rank 4 needs 2.06 GiB
    unset = device("unset", 1.0, memory_gib=2.2)  # the run's rank 32: cut 2 needs 2.5 GiB
    server = fleet([own], 1.0).server
    assert [(o.cut, o.rank) for o in device_options(own, COSTS, server, 32, (4, 8), 0.0)] == [(1, 4), (2, 4)]
    assert [(o.cut, o.rank) for o in device_options(unset, COSTS, server, 32, (4, 8), 0.0)] == [(1, 32)]


def test_a_plan_gives_auto_devices_the_rank_of_their_chosen_cut() -> None:
    """A slow server pushes both devices as deep as memory allows; the auto one's rank follows its cut."""
    devices = [device("auto", 1.0, memory_gib=2.2, rank="auto"), device("fixed", 1.0, rank=8)]
    plan = plan_fleet(fleet(devices, 0.05), COSTS, run_rank=16)
    assert [(d.cut, d.rank) for d in plan.devices] == [(2, 8), (3, 8)]
    assert all(d.memory_bytes <= d.budget_bytes for d in plan.devices)


def test_an_auto_device_with_no_fitting_candidate_is_named() -> None:
    devices = [device("starved", 1.0, memory_gib=1.05, rank="auto")]  # cut 1 at rank 4 needs 1.06 GiB
    with pytest.raises(FleetError, match=r"starved: no cut fits .* rank 4\)"):
        plan_fleet(fleet(devices, 1.0), COSTS, run_rank=16)


@pytest.mark.parametrize("ranks", [[], [0, 4], [True]])
def test_rank_candidates_must_be_positive_integers(ranks: list[int]) -> None:
    with pytest.raises(ConfigError, match="rank candidates"):
        check_rank_candidates(ranks)


def test_rank_candidates_are_sorted_once() -> None:
    assert check_rank_candidates([16, 4, 16, 8]) == (4, 8, 16)


def test_apply_and_to_dict_carry_the_plan() -> None:
    devices = [device("a", 1.0, memory_gib=2.2, rank="auto"), device("b", 0.1)]
    instance = fleet(devices, 0.05)
    plan = plan_fleet(instance, COSTS, run_rank=16)
    planned = plan.apply(instance)
    assert [(d.cut_layer, d.lora_rank) for d in planned.devices] == [(d.cut, d.rank) for d in plan.devices]
    assert planned.devices[1] == replace(devices[1], cut_layer=plan.devices[1].cut, lora_rank=16)
    document = json.loads(json.dumps(plan.to_dict()))
    assert [d["id"] for d in document["devices"]] == ["a", "b"]
    first = document["devices"][0]
    assert first["memory_budget_bytes"] == int(2.2 * GIB) and first["lora_rank"] == plan.devices[0].rank
    assert first["release_s"] == pytest.approx(first["phases_s"]["forward_s"] + first["phases_s"]["uplink_s"])
    assert document["makespan_s"] == plan.makespan_s
