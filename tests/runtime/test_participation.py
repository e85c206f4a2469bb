"""Availability draws, where disconnects and the deadline cut a device's work, and what it spent by then."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from fleettune.fleet import Device, Link, hardware
from fleettune.runtime.events import Activity
from fleettune.runtime.sim.clock import StepPhases, Timeline, one_server_step
from fleettune.runtime.sim.cutoffs import Span, cut_step, cut_transfers, leave_point, spent_until
from fleettune.runtime.sim.participation import (
    Cause,
    Leave,
    Participation,
    ParticipationLog,
    Spend,
    Turnout,
)


def _device(
    id: str, availability: float = 1.0, drop_probability: float = 0.0, offline: frozenset[int] = frozenset()
) -> Device:
    return Device(
        id,
        hardware("jetson-nano"),
        Link(),
        availability=availability,
        drop_probability=drop_probability,
        offline_rounds=offline,
    )


def _fifo(phases: Sequence[StepPhases], round: int, t0: float) -> Timeline:
    return one_server_step(phases, "fifo", round, t0)


def test_certain_and_impossible_availability() -> None:
    devices = [_device("on"), _device("off", availability=0.0), _device("traced", offline=frozenset({2}))]
    draws = Participation(devices, None, np.random.default_rng(0))
    turnouts = [draws.draw(r) for r in range(3)]
    assert [t.offline for t in turnouts] == [{"off"}, {"off", "traced"}, {"off"}]
    assert all(not t.drops for t in turnouts) and not draws.may_drop
    with pytest.raises(ValueError, match="in order"):
        draws.draw(5)


def test_availability_and_drop_rates_match_their_probabilities() -> None:
    devices = [_device(f"d{i}", availability=0.7, drop_probability=0.2) for i in range(50)]
    draws = Participation(devices, None, np.random.default_rng(1))
    turnouts = [draws.draw(r) for r in range(40)]
    online = sum(50 - len(t.offline) for t in turnouts)
    assert online / 2000 == pytest.approx(0.7, abs=0.03)
    assert sum(len(t.drops) for t in turnouts) / online == pytest.approx(0.2, abs=0.03)
    assert all(0 <= share < 1 for t in turnouts for share in t.drops.values())


def test_drop_point_splits_the_work_into_equal_parts() -> None:
    turnout = Turnout(drops={"a": 0.625})
    assert turnout.drop_point("a", 1) == (0, 0.625)
    assert turnout.drop_point("a", 4) == (2, 0.5)
    assert turnout.drop_point("b", 4) is None


def test_leave_point_by_busy_time_and_deadline() -> None:
    spans = [Span(0.0, 2.0), Span(5.0, 6.0)]  # busy 3 s, idle from 2 to 5
    assert leave_point(spans, 1.0, None) == Leave(1.0, Cause.DISCONNECT)
    assert leave_point(spans, 2.5, None) == Leave(5.5, Cause.DISCONNECT)  # never while waiting
    assert leave_point(spans, 3.0, None) is None  # beyond this work
    assert leave_point(spans, None, 4.0) == Leave(4.0, Cause.DEADLINE)
    assert leave_point(spans, 2.5, 5.2) == Leave(5.2, Cause.DEADLINE)  # whichever comes first
    assert leave_point(spans, 0.5, 5.2) == Leave(0.5, Cause.DISCONNECT)
    assert leave_point(spans, None, 6.0) is None


def test_spent_until_counts_transfers_pro_rata() -> None:
    spans = [Span(0.0, 1.0, downlink_bytes=100), Span(1.0, 3.0), Span(3.0, 5.0, uplink_bytes=1000)]
    assert spent_until(spans, 4.0) == Spend(client_s=4.0, uplink_bytes=500, downlink_bytes=100)
    assert spent_until(spans, 0.5) == Spend(client_s=0.5, downlink_bytes=50)
    assert spent_until(spans, 9.0) == Spend(client_s=5.0, uplink_bytes=1000, downlink_bytes=100)


PHASES = [
    StepPhases("fast", 1.0, 1.0, 2.0, 0.0, 1.0, 1.0),  # release 2, tail 2
    StepPhases("slow", 4.0, 1.0, 2.0, 0.0, 1.0, 3.0),  # release 5, tail 4
]
SIZES = {"fast": (100, 200), "slow": (100, 200)}


def test_cut_step_without_leavers_is_the_plain_timeline() -> None:
    plain = _fifo(PHASES, 0, 10.0)
    cut = cut_step(PHASES, _fifo, 0, 10.0, {}, 100.0, SIZES)
    assert not cut.left and cut.timeline == plain


def test_a_device_leaving_before_its_activations_arrive_is_never_served() -> None:
    cut = cut_step(PHASES, _fifo, 0, 0.0, {"slow": 4.5}, None, SIZES)
    assert cut.left == {"slow": Leave(4.5, Cause.DISCONNECT)}
    assert not [e for e in cut.timeline.events if e.client == "slow" and e.activity is Activity.SERVER_COMPUTE]
    assert cut.spent["slow"] == Spend(client_s=4.5, uplink_bytes=50)
    assert cut.timeline.end_s == pytest.approx(6.0)  # fast: served 2-4, tail to 6; nobody waits for slow


def test_a_device_leaving_after_the_server_answered() -> None:
    # fast served 2-4 then slow 5-7; slow's tail from 7: downlink 7-8, backward 8-11; busy 5 + 1.5 = 6.5 -> 8.5
    cut = cut_step(PHASES, _fifo, 0, 0.0, {"slow": 6.5}, None, SIZES)
    assert cut.left == {"slow": Leave(8.5, Cause.DISCONNECT)}
    assert cut.spent["slow"].server_s == pytest.approx(2.0) and cut.spent["slow"].downlink_bytes == 200
    assert cut.timeline.end_s == pytest.approx(7.0)  # the server's last job; the tail is not waited for
    assert max(e.end_s for e in cut.timeline.events if e.party == "slow") == pytest.approx(8.5)


def test_the_deadline_cuts_the_server_too() -> None:
    cut = cut_step(PHASES, _fifo, 0, 0.0, {}, 6.0, SIZES)
    assert cut.left == {"slow": Leave(6.0, Cause.DEADLINE)}
    assert cut.spent["slow"].server_s == pytest.approx(1.0)  # served from 5, stopped at 6
    assert all(e.end_s <= 6.0 for e in cut.timeline.events if "slow" in (e.party, e.client))
    assert cut.timeline.end_s == pytest.approx(6.0)


def test_cut_transfers() -> None:
    seconds, sizes = {"a": 2.0, "b": 4.0}, {"a": 10, "b": 40}
    cut = cut_transfers(seconds, sizes, Activity.ADAPTER_UPLINK, 0, 1.0, {"b": 1.0}, None)
    assert cut.left == {"b": Leave(2.0, Cause.DISCONNECT)} and cut.spent["b"].uplink_bytes == 10
    assert cut.timeline.end_s == 3.0
    late = cut_transfers(seconds, sizes, Activity.ADAPTER_DOWNLINK, 0, 1.0, {}, 4.0)
    assert late.left == {"b": Leave(4.0, Cause.DEADLINE)} and late.spent["b"].downlink_bytes == 30


def test_cut_transfers_from_each_clients_own_start() -> None:
    # "a" was done at 0.5 and "b" at 1.0 (the step's end, t0): each transfer starts then.
    seconds, sizes, starts = {"a": 2.0, "b": 1.0}, {"a": 10, "b": 40}, {"a": 0.5, "b": 1.0}
    whole = cut_transfers(seconds, sizes, Activity.ADAPTER_UPLINK, 0, 1.0, {}, None, starts)
    assert [(e.party, e.start_s, e.end_s) for e in whole.timeline.events] == [("a", 0.5, 2.5), ("b", 1.0, 2.0)]
    assert whole.timeline.end_s == 2.5 and not whole.left
    # A disconnect counts busy seconds from the client's own start; the deadline is a moment on the clock.
    cut = cut_transfers(seconds, sizes, Activity.ADAPTER_UPLINK, 0, 1.0, {"a": 1.0}, 1.5, starts)
    assert cut.left == {"a": Leave(1.5, Cause.DISCONNECT), "b": Leave(1.5, Cause.DEADLINE)}
    assert cut.spent["a"].uplink_bytes == 5 and cut.spent["b"].uplink_bytes == 20
    assert cut.timeline.end_s == 1.0  # nobody finished: the clock stays where the step ended
    early = cut_transfers({"a": 0.2}, {"a": 1}, Activity.ADAPTER_UPLINK, 0, 1.0, {}, None, {"a": 0.5})
    assert early.timeline.end_s == 1.0  # never before t0


def test_log_totals_and_lost_work() -> None:
    log = ParticipationLog()
    online = log.begin(Turnout(offline=frozenset({"c"})), ["a", "b", "c"])
    assert online == ["a", "b"]
    log.spend("a", Spend(1.0, 0.5, 10, 20))
    log.spend("b", Spend(2.0, 0.0, 30, 40))
    log.spend("b", Spend(1.0, 0.0, 1, 1))
    log.leave("b", Leave(3.0, Cause.DEADLINE))
    assert log.latest_leave_s == 3.0 and log.gone("b") and not log.gone("a")
    record = log.close()
    assert record.participants == ("a", "b") and record.offline == ("c",)
    assert record.dropped_deadline == ("b",) and record.completed == ("a",)
    assert log.totals.lost_work == Spend(3.0, 0.0, 31, 41)
    log.begin(Turnout(), ["a"])
    log.leave("a", Leave(1.0, Cause.DISCONNECT))
    log.close()
    totals = log.totals
    assert (totals.client_rounds, totals.completed, totals.offline) == (3, 1, 1)
    assert (totals.dropped_deadline, totals.dropped_disconnect, totals.rounds_without_update) == (1, 1, 1)
