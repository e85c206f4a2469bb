"""Deployments of real processes on 127.0.0.1: one server and three devices (with an intruder and some garbage)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fleettune.config import build_config
from fleettune.runner import execute, prepare
from tests.runtime.net.conftest import device_folders, tiny_flags
from tests.runtime.net.processes import finish, join_args, launch, run_deployed


def test_three_devices_train_like_the_simulation(tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path) -> None:
    """Three mesfl rounds between real processes, aggregating through secure aggregation (each device with its
    own secrets), end with the simulation's adapter (1e-6) and its cut, adapter and protocol byte counts
    (exactly); a wrong token is refused with one line and exit code 2; garbage written to the port does not
    stop the server."""
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", clients=3, rounds=3, privacy__secure_aggregation=True)
    prepared = prepare(build_config(flags=flags))
    folders = device_folders(prepared, tmp_path / "devices")
    first = next(iter(folders))
    intruder_log = tmp_path / "intruder.log"

    def intrude(port: int) -> None:
        intruder = launch(
            join_args(port, first, folders[first], "not-the-token-0123456789", "--retry", "30"), intruder_log
        )
        assert finish(intruder, 120, intruder_log) == 2
        errors = [line for line in intruder_log.read_text().splitlines() if line.startswith("fleettune: error")]
        assert len(errors) == 1 and "UNAUTHENTICATED" in errors[0] and "Traceback" not in intruder_log.read_text()
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(os.urandom(4096))

    report = run_deployed(flags, folders, tmp_path, intrude)
    out = tmp_path / "out"
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


def test_flora_devices_in_their_own_processes_draw_the_servers_fresh_adapters(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """Mixed ranks combined by stacking, between real processes: each device folds the stacked factors and draws
    its fresh adapter from seeds that are the same in every process, so the run has the simulation's losses and
    final adapter (1e-6) and its byte counts (exactly)."""
    fleet = tmp_path / "ranked.toml"
    lines = ['name = "ranked"', "[server]", 'kind = "rtx-4080-super"']
    for index, (rank, cut) in enumerate([(2, 1), (4, 2), (8, 1)]):
        lines += ["[[device]]", f'id = "d{index}"', 'kind = "jetson-orin-nano"', f"cut_layer = {cut}"]
        lines.append(f"lora_rank = {rank}")
    fleet.write_text("\n".join(lines) + "\n")
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", fleet=str(fleet), rounds=3, lr=1e-2)
    flags["lora.mixed_ranks"] = "flora"
    prepared = prepare(build_config(flags=flags))
    report = run_deployed(flags, device_folders(prepared, tmp_path / "devices"), tmp_path)
    out = tmp_path / "out"
    simulated = execute(prepared)
    assert simulated.adapter is not None
    deployed = load_file(str(out / "adapter.safetensors"))
    for key, value in simulated.adapter.items():
        torch.testing.assert_close(deployed[key], value, atol=1e-6, rtol=0)
    for kind in ("cut", "adapter"):
        assert report["communication_bytes"]["by_kind"][kind] == simulated.traffic.kinds[kind]
    # rounds 2 and 3 train on base weights the devices folded themselves
    losses = [r["train_loss"] for r in report["history"]]
    assert losses == pytest.approx([r.train_loss for r in simulated.history], abs=1e-6)
    assert report["final"]["accuracy"] == pytest.approx(simulated.final.scores.accuracy)
