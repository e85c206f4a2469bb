"""Per-cut costs measured on a tiny BERT, and the fleet step pricing that shares them."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedModel

from fleettune.compression import parse_cut_codec, parse_update_codec
from fleettune.fleet import load_fleet
from fleettune.messages import FP32_PADDED, CutWire
from fleettune.models.adapters import read_adapter
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import split_model
from fleettune.planning import MeasuredCosts, plan_fleet, price_step
from fleettune.planning.step import fleet_step_phases
from tests.models.tiny import tiny_model

INT8 = CutWire(parse_cut_codec("int8"), parse_cut_codec("int8", "compression.gradients"))


def _bert() -> PreTrainedModel:
    return tiny_model("bert")[0]


def _costs(wire: CutWire = FP32_PADDED, rank: int = 4) -> MeasuredCosts:
    _, task = tiny_model("bert")
    return MeasuredCosts(_bert, LoraSpec(rank=rank, dropout=0.0), task, 2, 8, wire)


@pytest.fixture(scope="module")
def costs() -> MeasuredCosts:
    return _costs()


def test_work_moves_from_server_to_client_as_the_cut_deepens(costs: MeasuredCosts) -> None:
    assert list(costs.cuts) == [1, 2, 3]
    steps = [costs.cost(cut, 4) for cut in costs.cuts]
    assert [s.client.forward for s in steps] == sorted({s.client.forward for s in steps})
    assert [s.client.backward for s in steps] == sorted({s.client.backward for s in steps})
    assert [s.server.total for s in steps] == sorted({s.server.total for s in steps}, reverse=True)
    assert len({(s.up_bytes, s.down_bytes) for s in steps}) == 1  # same hidden size at every cut
    assert steps[0].up_bytes > 2 * 8 * 32 * 4  # the fp32 cut tensor, with mask and labels


def test_memory_grows_with_the_cut_and_the_rank(costs: MeasuredCosts) -> None:
    at_rank_4 = [costs.memory_bytes(cut, 4) for cut in costs.cuts]
    assert at_rank_4 == sorted(set(at_rank_4))
    assert costs.memory_bytes(2, 32) > costs.memory_bytes(2, 4)
    assert costs.cost(2, 32).client.total > costs.cost(2, 4).client.total  # LoRA products grow with the rank


def test_a_smaller_codec_shrinks_the_payloads(costs: MeasuredCosts) -> None:
    fp32, int8 = costs.cost(1, 4), _costs(INT8).cost(1, 4)
    assert int8.up_bytes < fp32.up_bytes / 2 and int8.down_bytes < fp32.down_bytes / 2
    assert int8.client == fp32.client and int8.server == fp32.server


def test_measuring_leaves_the_global_rng_alone(costs: MeasuredCosts) -> None:
    before = torch.random.get_rng_state()
    costs.cost(3, 8)
    costs.memory_bytes(3, 8)
    assert torch.equal(before, torch.random.get_rng_state())


def test_fleet_step_phases_prices_with_the_planners_costs(costs: MeasuredCosts) -> None:
    fleet = load_fleet("paper6")  # cuts 1, 1, 2, 2, 3, 3
    _, task = tiny_model("bert")
    phases = fleet_step_phases(fleet, _bert, LoraSpec(rank=4, dropout=0.0), task, 2, 8)
    assert phases[0].switch_s > 0  # measured on a shared server with six clients
    for device, got in zip(fleet.devices, phases, strict=True):
        expected = price_step(device, costs.cost(int(device.cut_layer), 4), fleet.server, got.switch_s)
        assert got == expected


def test_a_plan_on_measured_costs_matches_its_priced_phases(costs: MeasuredCosts) -> None:
    fleet = load_fleet("paper6")
    plan = plan_fleet(fleet, costs, run_rank=4, switch_s=1e-4)
    for device, planned in zip(fleet.devices, plan.devices, strict=True):
        assert planned.phases == price_step(device, costs.cost(planned.cut, 4), fleet.server, 1e-4)
        assert planned.memory_bytes == costs.memory_bytes(planned.cut, 4)
    assert plan.uniform_round_s is not None and plan.written_round_s is not None
    assert plan.makespan_s <= min(plan.uniform_round_s, plan.written_round_s)


def test_the_adapter_part_is_measured_as_an_aggregation_sends_it(costs: MeasuredCosts) -> None:
    sizes = [costs.cost(cut, 4).adapter_bytes for cut in costs.cuts]
    assert sizes == sorted(set(sizes))  # one more layer's LoRA factors per cut
    assert costs.cost(2, 8).adapter_bytes > costs.cost(2, 4).adapter_bytes
    _, task = tiny_model("bert")
    client, _ = split_model(_bert(), 2, LoraSpec(rank=4, dropout=0.0), task)
    values = sum(t.numel() for t in read_adapter(client.peft).values())
    assert 4 * values < costs.cost(2, 4).adapter_bytes < 4 * values + 2048  # fp32 values and a header
    int8 = MeasuredCosts(_bert, LoraSpec(rank=4, dropout=0.0), task, 2, 8, updates=parse_update_codec("int8"))
    assert int8.cost(2, 4).adapter_bytes < costs.cost(2, 4).adapter_bytes / 2
