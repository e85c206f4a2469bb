"""Secure aggregation between deployed devices: the simulation's numbers and bytes, with real secrets on each
device, and the sum opening when a device vanishes after masking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fleettune.config import build_config
from fleettune.errors import ConfigError, InputError
from fleettune.runner import execute, prepare
from fleettune.runtime.ledger import ADAPTER, SECAGG
from fleettune.runtime.net.coordinator import Coordinator, ServeOptions
from fleettune.runtime.net.device import DeviceAgent
from fleettune.runtime.net.protocol import Instruction
from fleettune.runtime.net.transport.message import Message
from tests.runtime.net.conftest import tiny_flags
from tests.runtime.net.inprocess import FAST, Vanish, deploy

SECURE = {"privacy__secure_aggregation": True}


@pytest.mark.parametrize(
    ("scheme", "extra"),
    [
        ("mesfl", {"aggregate_every": 2, "clients": 4}),  # cuts 1, 1, 2, 2: one protocol instance per layer
        ("splitfed", {}),
        ("fl", {"client_fraction": 0.67, "local_steps": 2}),
        ("fl", {"local_steps": 2, "privacy__dp_clip": 0.05, "privacy__dp_noise": 0.5}),
        ("mesfl", {"clients": 4, "server_optimizer__name": "fedadam"}),  # masked updates, a server step
    ],
)
def test_secure_deployment_equals_secure_simulation(
    scheme: str, extra: dict[str, Any], tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """The opened sums give the simulation's global adapter (the encoding is deterministic, so to 1e-6 at most
    from float order), the masked inputs and protocol messages the simulation's byte counts exactly."""
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, scheme, rounds=4, **{"clients": 3, **SECURE, **extra})
    torch.manual_seed(0)
    simulated = execute(prepare(build_config(flags=flags)))
    deployed = deploy(flags, tmp_path)
    assert simulated.adapter is not None and deployed.adapter is not None
    for key, value in simulated.adapter.items():
        torch.testing.assert_close(deployed.adapter[key], value, atol=1e-6, rtol=0)
    for kind in (ADAPTER, SECAGG):
        assert deployed.traffic.kinds[kind] == simulated.traffic.kinds[kind], kind
    sim_totals, net_totals = simulated.secure_aggregation, deployed.secure_aggregation
    assert sim_totals is not None and net_totals is not None
    assert (net_totals.aggregations, net_totals.aborted) == (sim_totals.aggregations, 0) != (0, 0)
    assert (net_totals.uplink, net_totals.downlink) == (sim_totals.uplink, sim_totals.downlink)
    assert net_totals.resolution == sim_totals.resolution
    assert [h.epsilon for h in deployed.history] == [h.epsilon for h in simulated.history]
    if scheme == "mesfl":  # the cut-2 devices take part in two instances, the cut-1 devices in one
        shallow, _, deep, _ = sorted(net_totals.uplink.values())
        assert deep > 1.4 * shallow  # the second instance has two members: its messages are shorter


class _GoneAfterMasking(DeviceAgent):
    """Sends its masked inputs in the first aggregation, then vanishes before unmasking."""

    def secure_phase(self, instruction: Instruction) -> None:
        if instruction.phase == "unmask":
            raise Vanish
        super().secure_phase(instruction)


def test_the_sums_open_without_a_device_that_vanished_after_masking(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """Six devices at cuts 1, 1, 2, 2, 3, 3: a device at cut 2 (in the groups of layers 0 and 1, of six and four
    devices, each tolerating a dropout) leaves before unmasking. Its inputs are in both sums (every group masks
    before any unmasks; the others' shares strip its masks), so the global adapter is the one every device staying
    gives."""
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", clients=6, rounds=1, **SECURE)
    stayed = deploy(flags, tmp_path / "stayed")
    impatient = ServeOptions(poll_s=0.2, join_timeout_s=60.0, step_timeout_s=5.0)  # for the vanished replies
    vanished = deploy(flags, tmp_path / "vanished", _GoneAfterMasking, impatient, at=2)
    assert vanished.secure_aggregation is not None and stayed.secure_aggregation is not None
    assert (vanished.secure_aggregation.aggregations, vanished.secure_aggregation.aborted) == (1, 0)
    assert stayed.adapter is not None and vanished.adapter is not None
    for key, value in stayed.adapter.items():
        torch.testing.assert_close(vanished.adapter[key], value, atol=1e-6, rtol=0)
    # It never answered the unmasking rounds, so it sent less than when it stayed.
    victim = stayed.history[0].participants[2]  # fleet order
    assert vanished.secure_aggregation.uplink[victim] < stayed.secure_aggregation.uplink[victim]


def test_a_secure_aggregation_message_out_of_phase_is_refused(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "fl", clients=3, rounds=1, **SECURE)
    prepared = prepare(build_config(flags=flags))
    coordinator = Coordinator(prepared, FAST)
    device = prepared.setup.clients[0].id
    coordinator.handle(device, Message("join", device, 1, {"samples": "5"}))
    fields = {"round": "0", "phase": "masked_input", "group": "0", "clipped": "0"}
    with pytest.raises(InputError, match="out-of-phase secagg-0-masked_input of round 0"):
        coordinator.handle(device, Message("secagg", device, 2, fields, b"\x00" * 40))
    with pytest.raises(InputError, match="request field 'group' must be an integer, got 'x'"):
        coordinator.handle(device, Message("secagg", device, 3, {**fields, "group": "x"}, b""))


def test_update_attacks_are_refused_with_secure_aggregation(tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    flags = tiny_flags(
        tiny_model_dir, tiny_data_dir, "fl", clients=3, security__attack="scale", security__malicious_fraction=0.34
    )
    prepared = prepare(build_config(flags={**flags, "privacy.secure_aggregation": True}))
    with pytest.raises(ConfigError, match=r"^security\.attack: scale .* expected none$"):
        Coordinator(prepared, FAST)
