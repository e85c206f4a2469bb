"""Stragglers and drop-outs in every scheme: offline devices, the round deadline and mid-round disconnects."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleettune.schemes import SchemeResult
from tests.schemes.conftest import RunScheme

SCHEMES = ["fl", "sl", "cpsl", "splitfed", "mesfl"]


def _fleet(tmp_path: Path, *extra: str, slow: bool = False) -> str:
    """Three devices; `extra[i]` adds TOML lines to device i; `slow` makes the third one very slow."""
    lines = ['name = "trio"', "[server]", 'kind = "rtx-4080-super"']
    kinds = ["apple-m3", "apple-m3", "jetson-nano"]
    for i, kind in enumerate(kinds):
        lines += ["[[device]]", f'id = "dev{i}"', f"cut_layer = {1 + i % 2}"]
        if slow and i == 2:
            lines += ["tflops = 1e-7", "memory_gib = 8", "power_w = 5"]
        else:
            lines.append(f'kind = "{kind}"')
        if i < len(extra) and extra[i]:
            lines.append(extra[i])
    path = tmp_path / "trio.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _numbers(result: SchemeResult) -> tuple[object, ...]:
    return (
        result.step_losses,
        result.sim_time_s,
        result.final.scores,
        dict(result.traffic.uplink),
        dict(result.traffic.downlink),
        result.energy.server_j,
        dict(result.energy.clients_j),
        [(h.sim_time_s, h.train_loss, h.accuracy) for h in result.history],
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_full_availability_and_a_far_deadline_change_no_number(
    scheme: str, run_scheme: RunScheme, tmp_path: Path
) -> None:
    # Two local steps and aggregation every other round exercise every path of the round structure.
    plain = run_scheme(scheme, rounds=2, local_steps=2, aggregate_every=2, fleet=_fleet(tmp_path))
    entries = ["availability = 1.0\ndrop_probability = 0.0"] * 3
    fleet = _fleet(tmp_path, *entries)
    explicit = run_scheme(scheme, rounds=2, local_steps=2, aggregate_every=2, fleet=fleet, deadline_s=1e9)
    assert _numbers(explicit) == _numbers(plain)
    assert all(h.participants == ("dev0", "dev1", "dev2") for h in explicit.history)
    assert explicit.participation.completed == 6 and explicit.participation.lost_work.uplink_bytes == 0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_deadline_shorter_than_the_slowest_step_drops_exactly_that_device(
    scheme: str, run_scheme: RunScheme, tmp_path: Path
) -> None:
    # The slow device needs tens of virtual seconds for one forward pass; the others a few milliseconds.
    result = run_scheme(scheme, rounds=2, local_steps=1, fleet=_fleet(tmp_path, slow=True), deadline_s=1.0)
    assert all(h.dropped_deadline == ("dev2",) and not h.dropped_disconnect for h in result.history)
    assert result.participation.dropped_deadline == 2 and result.participation.completed == 4
    assert result.traffic.uplink.get("dev2", 0) == 0  # it never finished a forward pass in time
    # The server waits for the deadline, not for the slow device: a round lasts about the deadline.
    first = result.history[0].sim_time_s
    assert 1.0 <= first < 1.2 if scheme != "sl" else 1.0 <= first < 2.0
    assert result.participation.lost_work.client_s > 0.99 * len(result.history)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_device_that_always_disconnects_counts_for_nothing_but_its_spending(
    scheme: str, run_scheme: RunScheme, tmp_path: Path
) -> None:
    dropping = run_scheme(scheme, rounds=3, local_steps=1, fleet=_fleet(tmp_path, "", "drop_probability = 1"))
    absent = run_scheme(scheme, rounds=3, local_steps=1, fleet=_fleet(tmp_path, "", "availability = 0"))
    # A device that is never online never trains and never sends a byte.
    assert absent.traffic.uplink.get("dev1", 0) == 0 and absent.traffic.downlink.get("dev1", 0) == 0
    assert absent.energy.clients_j.get("dev1", 0.0) == 0.0
    assert all(h.offline == ("dev1",) and h.participants == ("dev0", "dev2") for h in absent.history)
    assert absent.traffic.uplink["dev0"] > 0 and absent.traffic.uplink["dev2"] > 0
    assert absent.participation.offline == 3 and absent.participation.completed == 6
    # Its updates are never aggregated: the model is the one the other two train (weights renormalised).
    assert dropping.final.scores.accuracy == absent.final.scores.accuracy
    for kept, alone in zip(dropping.history, absent.history, strict=True):
        assert kept.train_loss == pytest.approx(alone.train_loss, abs=1e-6)
        assert kept.dropped_disconnect == ("dev1",) and kept.participants == ("dev0", "dev1", "dev2")
    # What it sent before going away is counted, as traffic and as lost work.
    lost = dropping.participation.lost_work
    sent = dropping.traffic.uplink.get("dev1", 0) + dropping.traffic.downlink.get("dev1", 0)
    assert sent > 0 and lost.uplink_bytes + lost.downlink_bytes == sent
    assert lost.client_s > 0 and dropping.participation.dropped_disconnect == 3


@pytest.mark.parametrize("scheme", SCHEMES)
def test_when_nobody_completes_the_global_model_stays_and_the_round_is_recorded(
    scheme: str, run_scheme: RunScheme, tmp_path: Path
) -> None:
    everyone = ["drop_probability = 1"] * 3
    result = run_scheme(scheme, rounds=2, local_steps=1, fleet=_fleet(tmp_path, *everyone))
    untrained = run_scheme(scheme, rounds=2, local_steps=1, fleet=_fleet(tmp_path, *["availability = 0"] * 3))
    assert [h.round for h in result.history] == [1, 2]
    assert all(h.train_loss is None and len(h.dropped_disconnect) == 3 for h in result.history)
    assert result.final.scores == untrained.final.scores
    assert result.participation.rounds_without_update == 2
    assert result.sim_time_s > 0 and untrained.sim_time_s == 0


def test_an_availability_trace_is_followed(run_scheme: RunScheme, tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text("round,device_id,online\n1,dev0,0\n3,dev0,0\n2,dev1,0\n2,dev0,1\n")
    trace = 'availability_trace = "trace.csv"'
    for scheme in ("fl", "mesfl"):
        result = run_scheme(scheme, rounds=4, local_steps=1, fleet=_fleet(tmp_path, trace, trace))
        assert [h.offline for h in result.history] == [("dev0",), ("dev1",), ("dev0",), ()]


def test_draws_are_deterministic_per_seed_and_shared_by_schemes(run_scheme: RunScheme, tmp_path: Path) -> None:
    entries = ["availability = 0.6\ndrop_probability = 0.4"] * 3
    fleet = _fleet(tmp_path, *entries)
    first = run_scheme("mesfl", rounds=4, fleet=fleet)
    again = run_scheme("mesfl", rounds=4, fleet=fleet)
    assert _numbers(first) == _numbers(again) and _turnout(first) == _turnout(again)
    assert first.participation == again.participation
    assert first.participation.offline > 0 and first.participation.dropped_disconnect > 0
    assert _turnout(run_scheme("fl", rounds=4, local_steps=1, fleet=fleet)) == _turnout(
        first
    )  # the same draws for every scheme
    assert _turnout(run_scheme("mesfl", rounds=4, fleet=fleet, seed=1)) != _turnout(first)


def _turnout(result: SchemeResult) -> list[tuple[tuple[str, ...], ...]]:
    return [(h.participants, h.offline, h.dropped_deadline, h.dropped_disconnect) for h in result.history]


@pytest.mark.parametrize("scheme", ["cpsl", "mesfl"])
def test_a_disconnect_is_not_waited_for(scheme: str, run_scheme: RunScheme, tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, "", "", "drop_probability = 1", slow=True)
    result = run_scheme(scheme, rounds=1, fleet=fleet)
    waited = run_scheme(scheme, rounds=1, fleet=_fleet(tmp_path, slow=True))
    assert result.history[0].dropped_disconnect == ("dev2",)
    # The slow device leaves somewhere in its work: the round ends when it leaves, not when it would have finished.
    assert result.sim_time_s < waited.sim_time_s
    gone = max(e.end_s for e in result.events if e.party == "dev2")
    assert result.sim_time_s >= gone
