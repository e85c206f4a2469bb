"""A deployment of real processes on 127.0.0.1: one server, three devices, an intruder and some garbage."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fleettune.config import build_config
from fleettune.runner import execute, prepare
from tests.runtime.net.conftest import device_folders, tiny_flags
from tests.runtime.net.processes import (
    finish,
    free_port,
    join_args,
    kill,
    launch,
    serve_args,
    write_config,
    write_tokens,
)


def test_three_devices_train_like_the_simulation(tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path) -> None:
    """Three mesfl rounds between real processes, aggregating through secure aggregation (each device with its
    own secrets), end with the simulation's adapter (1e-6) and its cut, adapter and protocol byte counts
    (exactly); a wrong token is refused with one line and exit code 2; garbage written to the port does not
    stop the server."""
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", clients=3, rounds=3, privacy__secure_aggregation=True)
    prepared = prepare(build_config(flags=flags))
    folders = device_folders(prepared, tmp_path / "devices")
    config = write_config(flags, tmp_path / "run.toml")
    tokens = write_tokens(list(folders), tmp_path / "tokens.txt")
    port, out = free_port(), tmp_path / "out"
    logs = [tmp_path / "server.log", *(tmp_path / f"{d}.log" for d in folders), tmp_path / "intruder.log"]
    server = launch(serve_args(config, port, out, "--tokens", str(tmp_path / "tokens.txt")), logs[0])
    devices = []
    try:
        for (device, folder), log in zip(folders.items(), logs[1:4], strict=True):
            devices.append(launch(join_args(port, device, folder, tokens[device]), log))
        first = next(iter(folders))
        intruder = launch(join_args(port, first, folders[first], "not-the-token-0123456789", "--retry", "30"), logs[4])
        assert finish(intruder, 120, logs[4]) == 2
        errors = [line for line in logs[4].read_text().splitlines() if line.startswith("fleettune: error")]
        assert len(errors) == 1 and "UNAUTHENTICATED" in errors[0] and "Traceback" not in logs[4].read_text()
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(os.urandom(4096))
        for process, log in zip(devices, logs[1:4], strict=True):
            assert finish(process, 240, log) == 0, log.read_text()[-2000:]
        assert finish(server, 60, logs[0]) == 0, logs[0].read_text()[-2000:]
    finally:
        for process in [server, *devices]:
            kill(process)
    report = json.loads((out / "report.json").read_text())
    assert [r["round"] for r in report["history"]] == [1, 2, 3]
    assert report["time_basis"] == "wall-clock"
    torch.manual_seed(0)
    simulated = execute(prepared)
    assert simulated.adapter is not None
    deployed = load_file(str(out / "adapter.safetensors"))
    assert deployed.keys() == simulated.adapter.keys()
    for key, value in simulated.adapter.items():
        torch.testing.assert_close(deployed[key], value, atol=1e-6, rtol=0)
    for kind in ("cut", "adapter", "secagg"):
        assert report["communication_bytes"]["by_kind"][kind] == simulated.traffic.kinds[kind]
    assert report["privacy"]["secure_aggregation"]["aggregations"] == 3
    assert report["final"]["accuracy"] == pytest.approx(simulated.final.scores.accuracy)
