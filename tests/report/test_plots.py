"""The round's Gantt chart: which row each event is drawn on, and the PNG written."""

from __future__ import annotations

from pathlib import Path

from fleettune.report.plots import gantt_row, memory_bars, round_gantt, server_capacity_line


def _event(party: str, activity: str, start: float, end: float, client: str | None) -> dict:
    return {"round": 0, "party": party, "activity": activity, "start_s": start, "end_s": end, "client": client}


TIMELINE = [
    _event("dev-a", "uplink", 0.0, 1.0, "dev-a"),
    _event("dev-b", "uplink", 0.0, 1.0, "dev-b"),
    _event("server", "server-queue", 1.0, 1.0, "dev-a"),
    _event("server", "server-compute", 1.0, 2.0, "dev-a"),
    _event("server", "server-queue", 1.0, 2.0, "dev-b"),  # dev-b waits while the server serves dev-a
    _event("server", "server-compute", 2.0, 3.0, "dev-b"),
    _event("server", "aggregate", 3.0, 3.1, None),
]


def test_a_wait_in_the_queue_is_drawn_on_the_waiting_devices_row() -> None:
    parties = {"dev-a", "dev-b", "server"}
    rows = [gantt_row(e, parties) for e in TIMELINE]
    assert rows == ["dev-a", "dev-b", "dev-a", "server", "dev-b", "server", "server"]


def test_a_queue_event_of_a_device_without_a_row_stays_on_the_server() -> None:
    assert gantt_row(_event("server", "server-queue", 0.0, 1.0, "gone"), {"server"}) == "server"


def test_round_gantt_writes_a_png(tmp_path: Path) -> None:
    path = round_gantt(TIMELINE, 0, "one round", tmp_path / "round.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _memory(server_peak: int, capacity: int | None) -> dict:
    memory = {"server_peak": server_peak, "clients_peak": {"dev-a": 1}}
    return {"memory_bytes": memory if capacity is None else {**memory, "server_capacity": capacity}}


def test_the_server_memory_line_is_drawn_only_for_one_server_within_reach(tmp_path: Path) -> None:
    mib = 2**20
    within = {"splitfed": _memory(900 * mib, 1000 * mib), "mesfl": _memory(100 * mib, 1000 * mib)}
    assert server_capacity_line(within) == 1000.0
    assert server_capacity_line({"mesfl": _memory(499 * mib, 1000 * mib)}) is None  # far above: no line
    assert server_capacity_line({"a": _memory(900 * mib, 1000 * mib), "b": _memory(900 * mib, 2000 * mib)}) is None
    assert server_capacity_line({"a": _memory(900 * mib, None)}) is None  # a report from before the key
    assert memory_bars(within, tmp_path / "memory.png").read_bytes()[:4] == b"\x89PNG"
