"""Faults between real processes: a device killed mid-run and restarted, the server killed and resumed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.runtime.net.conftest import tiny_flags
from tests.runtime.net.processes import Fleet, finish, kill, rounds_logged, wait_for

ROUNDS = 16


def test_a_killed_device_and_a_killed_server_lose_no_completed_round(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", clients=3, rounds=ROUNDS)
    fleet = Fleet.write(flags, tmp_path)
    server_log, resumed_log = tmp_path / "server.log", tmp_path / "server-resumed.log"
    names = list(fleet.folders)
    logs = {d: tmp_path / f"{d}.log" for d in names}
    all_logs = [server_log, resumed_log, *logs.values()]
    server = fleet.serve(server_log, "--step-timeout", "4")
    devices = {d: fleet.join(d, logs[d]) for d in names}
    resumed = None
    try:
        wait_for(lambda: rounds_logged(server_log) >= 3, 240, "round 3", all_logs)
        victim = names[0]
        killed_at = rounds_logged(server_log)
        kill(devices[victim])  # at a random moment: rounds go on without it
        wait_for(lambda: rounds_logged(server_log) >= killed_at + 2, 60, "rounds without the victim", all_logs)
        devices[victim] = fleet.join(victim, tmp_path / "rejoined.log")
        all_logs.append(tmp_path / "rejoined.log")
        done_before = rounds_logged(server_log)
        wait_for(lambda: rounds_logged(server_log) >= done_before + 3, 120, "rounds after the rejoin", all_logs)
        kill(server)
        resumed = fleet.serve(resumed_log, "--step-timeout", "4", "--resume")
        for d, process in devices.items():
            assert finish(process, 300, logs[d]) == 0, logs[d].read_text()[-2000:]
        assert finish(resumed, 60, resumed_log) == 0, resumed_log.read_text()[-2000:]
    finally:
        for process in [server, resumed, *devices.values()]:
            if process is not None:
                kill(process)
    history = json.loads((fleet.out / "report.json").read_text())["history"]
    assert [r["round"] for r in history] == list(range(1, ROUNDS + 1))  # each round once: none lost, none twice
    after_kill = history[killed_at : killed_at + 2]
    assert all(victim not in r["participants"] or victim in r["dropped_disconnect"] for r in after_kill[1:])
    assert "resumed after round" in resumed_log.read_text()
