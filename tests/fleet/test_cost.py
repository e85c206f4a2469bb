"""Cost model: golden seconds for transfers and compute (FACTS section 2), energy, and the adapter switch."""

from __future__ import annotations

import itertools

import pytest

from fleettune.errors import ModelError
from fleettune.fleet import Device, Link, hardware
from fleettune.fleet.cost import compute_s, downlink_s, energy_j, measure_switch_s, transfer_s, uplink_s

CUT_TENSOR_BYTES = 16 * 128 * 768 * 4  # BERT-base cut tensor at batch 16, seq 128, fp32


def test_cut_tensor_is_6_mib_and_takes_503_ms_at_100_mbps() -> None:
    assert CUT_TENSOR_BYTES == 6 * 2**20
    assert transfer_s(CUT_TENSOR_BYTES, 100.0, 0.0) == pytest.approx(0.50331648, rel=1e-12)
    assert transfer_s(CUT_TENSOR_BYTES, 100.0, 5.0) == pytest.approx(0.50831648, rel=1e-12)


def test_uplink_and_downlink_use_their_own_rates_and_the_latency() -> None:
    device = Device("d", hardware("jetson-nano"), Link(uplink_mbps=10.0, downlink_mbps=100.0, latency_ms=20.0))
    assert uplink_s(device, 1_250_000) == pytest.approx(1.0 + 0.02)  # 10^7 bits at 10 Mbps
    assert downlink_s(device, 1_250_000) == pytest.approx(0.1 + 0.02)


def test_bert_base_layer_forward_on_the_edge_server_and_a_jetson_nano() -> None:
    layer_flops = 30.1e9  # one BERT-base layer forward, batch 16, seq 128 (FACTS section 2)
    server = hardware("rtx-4080-super")
    assert server.efficiency == 0.4
    assert compute_s(layer_flops, server) == pytest.approx(30.1e9 / (52.2e12 * 0.4), rel=1e-12)
    assert compute_s(layer_flops, server) == pytest.approx(1.4415708812e-3, rel=1e-9)
    assert compute_s(layer_flops, hardware("jetson-nano")) == pytest.approx(0.15942796610, rel=1e-9)


def test_energy_is_power_times_busy_time() -> None:
    assert energy_j(7.5, 2.0) == 15.0
    assert energy_j(320.0, 0.0) == 0.0


def test_switch_time_is_the_clocked_time_over_the_number_of_switches() -> None:
    served: list[str] = []
    ticks = itertools.count(step=0.5)
    seconds = measure_switch_s(served.append, ["a", "b", "c"], repeats=4, clock=lambda: next(ticks))
    assert seconds == pytest.approx(0.5 / 12)  # one clock step across 4 x 3 switches
    assert served == ["a", "b", "c"] * 4


def test_switch_needs_two_names_and_a_repeat() -> None:
    with pytest.raises(ModelError, match="at least 2"):
        measure_switch_s(print, ["client1"], repeats=1)
    with pytest.raises(ModelError, match="repeats"):
        measure_switch_s(print, ["client1", "client2"], repeats=0)
