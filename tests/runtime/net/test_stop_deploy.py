"""Ctrl-C on a deployed server: the round in progress ends, the devices are told training is over, and the
report of the rounds run is written (exit 130); the checkpoint stays for --resume."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.runtime.net.conftest import tiny_flags
from tests.runtime.net.processes import Fleet, finish, kill, rounds_logged, wait_for

ROUNDS = 10_000


def test_ctrl_c_on_the_server_ends_the_round_and_writes_the_report(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", clients=3, rounds=ROUNDS)
    fleet = Fleet.write(flags, tmp_path)
    out, checkpoints = fleet.out, fleet.checkpoints
    server_log = tmp_path / "server.log"
    logs = {d: tmp_path / f"{d}.log" for d in fleet.folders}
    server = fleet.serve(server_log)
    devices = {d: fleet.join(d, logs[d]) for d in fleet.folders}
    try:
        wait_for(lambda: rounds_logged(server_log) >= 2, 240, "round 2", [server_log, *logs.values()])
        server.send_signal(signal.SIGINT)
        assert finish(server, 120, server_log) == 130, server_log.read_text()[-2000:]
        for device, process in devices.items():
            assert finish(process, 60, logs[device]) == 0, logs[device].read_text()[-2000:]
    finally:
        for process in [server, *devices.values()]:
            kill(process)
    text = server_log.read_text()
    report = json.loads((out / "report.json").read_text())
    ran = len(report["history"])
    assert report["stopped"] == "interrupted" and report["rounds_planned"] == ROUNDS and ran >= 2
    assert ran == rounds_logged(server_log)
    assert report["history"][-1]["accuracy"] == report["final"]["accuracy"]  # the last round was evaluated
    assert "press Ctrl-C again" in text and "Traceback" not in text
    assert text.strip().splitlines()[-1] == (
        f"fleettune: stopped: mesfl interrupted after round {ran} of {ROUNDS}; its report is in {out / 'report.json'}"
    )
    assert any(checkpoints.iterdir())  # every round aggregated: --resume can go on from the last one
