"""What a training run makes of "auto" in a fleet file: the deepest cut that fits, and the run's rank."""

from __future__ import annotations

from fleettune.fleet.feasibility import GIB, resolve_fleet_cuts
from tests.planning.tables import device, fleet


def test_a_run_takes_the_deepest_fitting_cut_and_its_own_rank_for_auto() -> None:
    devices = [device("auto", 1.0, memory_gib=2.5, rank="auto"), device("eight", 1.0, rank=8)]
    resolved = resolve_fleet_cuts(fleet(devices, 1.0), 4, lambda cut: cut * GIB)
    assert [(d.cut_layer, d.lora_rank) for d in resolved.devices] == [(2, None), (3, 8)]


def test_without_a_memory_model_auto_rank_still_means_the_runs_rank() -> None:
    resolved = resolve_fleet_cuts(fleet([device("auto", 1.0, rank="auto")], 1.0), 4, None)
    assert resolved.devices[0].lora_rank is None and resolved.devices[0].cut_layer == "auto"
