"""`plan_cuts = true`: a run trains with the cuts (and "auto" ranks) the planner chooses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleettune.config import build_config
from fleettune.errors import ConfigError
from fleettune.planning import Cadence
from fleettune.runner import execute, prepare
from fleettune.scheduling import SHARING

FLEET = """name = "to-plan"
[server]
kind = "rtx-4080-super"
[[device]]
id = "fast"
kind = "jetson-orin-nano"
cut_layer = "auto"
lora_rank = "auto"
[[device]]
id = "slow"
kind = "raspberry-pi-4"
cut_layer = 3
uplink_mbps = 5
[[device]]
id = "phone"
kind = "snapdragon-8-gen3"
lora_rank = 4
"""


def _flags(tiny_model_dir: Path, tiny_data_dir: Path, fleet: Path, **extra: Any) -> dict[str, Any]:
    return {
        "scheme": "mesfl",
        "model": str(tiny_model_dir),
        "dataset": "local",
        "data_dir": str(tiny_data_dir),
        "fleet": str(fleet),
        "batch_size": 8,
        "max_length": 16,
        "lora.rank": 4,
        "rounds": 2,
        "switch_ms": 1.0,
        **extra,
    }


def test_a_planned_run_trains_with_the_plan(tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET)
    prepared = prepare(build_config(flags=_flags(tiny_model_dir, tiny_data_dir, fleet, plan_cuts=True)))
    plan = prepared.plan
    assert plan is not None
    chosen = {d.device: (d.cut, d.rank) for d in plan.devices}
    assert {d.id: (d.cut_layer, d.lora_rank) for d in prepared.fleet.devices} == chosen
    assert chosen["phone"][1] == 4  # a device's own rank is kept
    assert {c.id: c.device.cut_layer for c in prepared.setup.clients} == {k: v[0] for k, v in chosen.items()}
    assert prepared.setup.lora_for("phone").rank == 4
    assert plan.uniform_round_s is None or plan.makespan_s <= plan.uniform_round_s
    result = execute(prepared)
    assert len(result.history) == 2 and result.final.scores.accuracy >= 0


def test_without_planning_auto_is_the_deepest_fitting_cut(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET)
    prepared = prepare(build_config(flags=_flags(tiny_model_dir, tiny_data_dir, fleet)))
    assert prepared.plan is None
    assert prepared.fleet.devices[0].cut_layer == 3  # the 4-layer model's deepest cut, which fits


def test_planning_needs_a_split_scheme(tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET)
    with pytest.raises(ConfigError, match="plan_cuts"):
        prepare(build_config(flags=_flags(tiny_model_dir, tiny_data_dir, fleet, plan_cuts=True, scheme="fl")))


@pytest.mark.parametrize(("scheme", "policy"), [("mesfl", "schrage"), ("splitfed", SHARING)])
def test_the_plan_predicts_the_simulated_seconds_per_round(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, scheme: str, policy: str
) -> None:
    """Padded batches make every step alike, so the simulator's clock must tick exactly as the plan says: a
    plain step, then the step that ends with the adapter parts' round trip (FedAvg every second round).
    `splitfed`'s copies share the server and switch no adapter; `mesfl` serves one device at a time."""
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET)
    flags = _flags(tiny_model_dir, tiny_data_dir, fleet, plan_cuts=True, aggregate_every=2, rounds=4, scheme=scheme)
    prepared = prepare(build_config(flags={**flags, "padding": "max_length"}))
    plan = prepared.plan
    assert plan is not None and plan.cadence == Cadence(aggregate_every=2, local_steps=1)
    assert plan.policy == policy
    assert plan.aggregating_s is not None and plan.aggregating_s > plan.makespan_s
    times = [record.sim_time_s for record in execute(prepared).history]
    # What the plan leaves out: the server's averaging (nanoseconds here), and the device id and step number in
    # a run's message headers, where the planner's probe has placeholders. The cut gradient's payload is 8 bytes
    # longer in the run (0.64 us at 100 Mbps; 1.6e-5 of the step).
    assert times[0] == pytest.approx(plan.makespan_s, rel=1e-4)
    assert times[1] - times[0] == pytest.approx(plan.aggregating_s, rel=1e-4)
    assert times[3] == pytest.approx(4 * plan.round_s, rel=1e-4)
    assert times[3] - times[1] == pytest.approx(times[1], rel=1e-9)  # every period alike


@pytest.mark.parametrize(
    ("scheme", "extra"),
    [("sl", {}), ("cpsl", {"cluster_size": 2}), ("cpsl", {"cluster_size": 2, "cluster_by": "cut"})],
)
def test_a_plan_of_turns_predicts_the_simulated_round(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, scheme: str, extra: dict[str, Any]
) -> None:
    """`sl` and `cpsl`: each cluster's hand-off, its steps (first come, first served) and its members' uploads,
    turn after turn. The fleet's devices train one rank, as these schemes need."""
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET.replace('lora_rank = "auto"\n', "").replace("lora_rank = 4\n", ""))
    flags = _flags(tiny_model_dir, tiny_data_dir, fleet, plan_cuts=True, rounds=2, scheme=scheme, **extra)
    prepared = prepare(build_config(flags={**flags, "padding": "max_length"}))
    plan = prepared.plan
    assert plan is not None and plan.policy == "fifo" and plan.aggregating_s is None
    assert plan.round_s >= plan.lower_bound_s
    times = [record.sim_time_s for record in execute(prepared).history]
    assert times[0] == pytest.approx(plan.round_s, rel=1e-4)
    assert times[1] == pytest.approx(2 * plan.round_s, rel=1e-4)


def test_auto_ranks_are_the_runs_rank_where_the_scheme_cannot_mix_them(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """`cpsl` hands one adapter on, so an "auto" device is planned at the run's rank and the run accepts the plan."""
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET.replace("lora_rank = 4\n", ""))
    flags = _flags(tiny_model_dir, tiny_data_dir, fleet, plan_cuts=True, scheme="cpsl", rounds=1)
    prepared = prepare(build_config(flags=flags))
    assert prepared.plan is not None and {d.rank for d in prepared.plan.devices} == {4}
    assert len(execute(prepared).history) == 1
