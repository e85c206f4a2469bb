"""Seconds per round with aggregations: golden numbers on hand-made options, and plans that change with the cadence."""

from __future__ import annotations

import pytest

from fleettune.planning import Cadence, plan_fleet, round_time
from fleettune.planning.costs import Option
from fleettune.planning.rounds import alone_round_s, round_lower_bound
from fleettune.runtime.sim.clock import StepPhases
from fleettune.scheduling import SCHEDULERS, SHARING, server_policy
from tests.planning.tables import MIB, device, fleet, gib_per_layer, layered

OPTIMAL = SCHEDULERS.get("optimal")


def _option(device: str, release: float, processing: float, tail: float, up: float, down: float) -> Option:
    phases = StepPhases(device, release, 0.0, processing, 0.0, 0.0, tail)
    return Option(1, 4, 0, None, phases, up, down)  # type: ignore[arg-type]


# a: released at 1, 2 of server work, tail 3, adapter 4 s up and 1 s down; b: 2, 1, 1, 0.5 up, 2 down
A, B = _option("a", 1, 2, 3, 4, 1), _option("b", 2, 1, 1, 0.5, 2)


def test_a_plain_step_and_the_step_with_the_adapters_round_trip() -> None:
    """Plain: a at the server 1..3 (ends 6), b 3..4 (ends 5): 6. With uploads the tails are 7 and 1.5: a
    first again, a's upload arrives at 10, b's at 5.5; the longest download (b's, 2 s) ends it at 12."""
    once = round_time([A, B], OPTIMAL, Cadence(1))
    assert (once.step_s, once.aggregating_s, once.round_s) == (6.0, 12.0, 12.0)
    assert round_time([A, B], OPTIMAL, Cadence(2)).round_s == 9.0  # (6 + 12) / 2
    assert round_time([A, B], OPTIMAL, Cadence(2, local_steps=2)).round_s == 15.0  # (3 x 6 + 12) / 2
    plain = round_time([A, B], OPTIMAL, None)
    assert (plain.step_s, plain.aggregating_s, plain.round_s) == (6.0, None, 6.0)


def test_splitfed_copies_share_the_server() -> None:
    """Processor sharing: a alone at the server from 1 to 2 (1 of its 2 s done), then a and b at half speed
    each, both done at 4: a ends at 4 + 3 = 7, b at 5. With uploads a ends at 4 + 7 = 11, b at 5.5, and b's 2 s
    download ends the aggregating step at 13. One at a time (above) gave 6 and 12."""
    shared = round_time([A, B], server_policy(SHARING), Cadence(1))
    assert (shared.step_s, shared.aggregating_s, shared.round_s) == (7.0, 13.0, 13.0)
    assert round_time([A, B], server_policy(SHARING), Cadence(2)).round_s == 10.0  # (7 + 13) / 2
    assert round_lower_bound([[A], [B]], Cadence(1)) <= 12.0


def test_alone_a_device_pays_its_path_and_every_Ith_round_its_round_trip() -> None:
    assert alone_round_s(A, None) == 6.0
    assert alone_round_s(A, Cadence(1)) == 11.0  # 6 + 4 + 1
    assert alone_round_s(A, Cadence(2)) == 8.5  # (6 + 11) / 2


def test_the_bound_holds_each_kind_of_step_apart() -> None:
    """With one option each, each bound is the schedule's own here: 6 for the plain step, 10 + 2 for the last."""
    assert round_lower_bound([[A], [B]], Cadence(2)) == pytest.approx(9.0)
    assert round_lower_bound([[A], [B]], None) == pytest.approx(6.0)


def test_a_cadence_needs_positive_counts() -> None:
    with pytest.raises(ValueError, match="aggregate_every and local_steps >= 1"):
        Cadence(0)
    with pytest.raises(ValueError, match="aggregate_every and local_steps >= 1"):
        Cadence(1, local_steps=0)


def test_frequent_aggregations_over_a_slow_link_keep_the_adapter_small() -> None:
    """Two devices of 1 TFLOPS on 5 Mbps links (1 ms latency), a 0.05 TFLOPS server, four 1-GFLOP layers, a
    0.1 MiB cut tensor, 0.5 MiB of adapter per client layer. A plain step is shortest at cut 3 (the server is
    slow), but each aggregation then moves 1.5 MiB each way per device: averaged every round, cut 1 wins."""
    costs = layered(4, 1.0, 0.1, gib_per_layer, adapter_mib=0.5)
    devices = fleet([device("d", 1.0, mbps=5.0), device("e", 1.0, mbps=5.0)], 0.05)
    step_only = plan_fleet(devices, costs, run_rank=16)
    every_round = plan_fleet(devices, costs, run_rank=16, cadence=Cadence(1))
    rarely = plan_fleet(devices, costs, run_rank=16, cadence=Cadence(50))
    assert [d.cut for d in step_only.devices] == [3, 3]
    assert [d.cut for d in every_round.devices] == [1, 1]
    assert [d.cut for d in rarely.devices] == [3, 3]
    # Cut 1 by hand: the cut tensor takes 104,857 B x 8 / 5e6 + 1 ms each way; forward 1 ms, backward 2 ms;
    # the server 9 GFLOP per device at 0.05 TFLOPS, one device after the other.
    tensor = 104_857 * 8 / 5e6 + 1e-3
    release, tail = 1e-3 + tensor, tensor + 2e-3
    step = release + 2 * 0.18 + tail
    adapter = 0.5 * MIB * 8 / 5e6 + 1e-3
    assert every_round.makespan_s == pytest.approx(step, rel=1e-12)
    assert every_round.round_s == pytest.approx(step + 2 * adapter, rel=1e-12)
    assert every_round.devices[0].option.upload_s == pytest.approx(adapter, rel=1e-12)
    assert every_round.lower_bound_s <= every_round.round_s
    # the step-only plan's cuts, averaged every round, take longer
    written = plan_fleet(step_only.apply(devices), costs, run_rank=16, cadence=Cadence(1)).written_round_s
    assert written is not None and written > 2 * every_round.round_s
