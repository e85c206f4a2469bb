"""Memory feasibility: client-stage bytes measured on a tiny model, and each device's cut from its memory."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import PreTrainedModel

from fleettune.errors import FleetError, ModelError
from fleettune.fleet import Device, Fleet, Hardware, Link
from fleettune.fleet.feasibility import (
    GIB,
    ClientMemoryModel,
    check_batch_fits,
    client_stage_memory,
    cut_tensor_floor,
    resolve_cuts,
)
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import Task
from fleettune.runtime.memory import MemoryBreakdown
from fleettune.training import LocalOptimizer
from tests.models.tiny import tiny_model


def _device(name: str, memory_gib: float, cut: int | str) -> Device:
    return Device(name, Hardware(name, 1.0, memory_gib, 5.0), Link(), cut_layer=cut)


def one_gib_per_layer(cut: int) -> int:
    return cut * GIB


def test_auto_takes_the_deepest_cut_that_fits() -> None:
    devices = [_device("small", 2.5, "auto"), _device("big", 64.0, "auto"), _device("exact", 3.0, "auto")]
    assert resolve_cuts(devices, 12, one_gib_per_layer) == [2, 11, 3]


def test_an_int_cut_that_fits_is_kept() -> None:
    assert resolve_cuts([_device("pi", 4.0, 4), _device("m3", 16.0, 1)], 6, one_gib_per_layer) == [4, 1]


@pytest.mark.parametrize("cut", [0, 6, 9])
def test_an_int_cut_outside_the_model_names_the_device(cut: int) -> None:
    message = rf"^pi: cut_layer must be \"auto\" or in 1\.\.5 for a 6-layer model, got {cut}$"
    with pytest.raises(FleetError, match=message):
        resolve_cuts([_device("pi", 64.0, cut)], 6, one_gib_per_layer)


def test_an_int_cut_too_big_for_the_device_names_needed_and_available_memory() -> None:
    with pytest.raises(FleetError, match=r"^nano: cut_layer 5 needs 5\.00 GiB, the device has 4\.00 GiB$"):
        resolve_cuts([_device("ok", 8.0, 3), _device("nano", 4.0, 5)], 12, one_gib_per_layer)


def test_auto_fails_when_even_one_layer_does_not_fit() -> None:
    message = r"^nano: no cut fits: cut_layer 1 alone needs 1\.00 GiB, the device has 0\.50 GiB$"
    with pytest.raises(FleetError, match=message):
        resolve_cuts([_device("nano", 0.5, "auto")], 12, one_gib_per_layer)


def test_a_model_of_one_layer_cannot_be_split() -> None:
    with pytest.raises(ModelError, match="1-layer model cannot be split"):
        resolve_cuts([_device("pi", 4.0, "auto")], 1, one_gib_per_layer)


def test_auto_probes_few_cuts() -> None:
    probed: list[int] = []

    def memory(cut: int) -> int:
        probed.append(cut)
        return cut * GIB

    assert resolve_cuts([_device("d", 7.0, "auto")], 32, memory) == [7]
    assert len(probed) <= 1 + 5  # cut 1, then a bisection of 1..31


@given(
    steps=st.lists(st.integers(0, 3 * GIB), min_size=2, max_size=24),
    memory_gib=st.floats(0.1, 40.0),
)
def test_auto_equals_the_deepest_fitting_cut_for_any_growing_memory(steps: list[int], memory_gib: float) -> None:
    num_layers = len(steps)
    totals = [sum(steps[:k]) + GIB // 4 for k in range(1, num_layers + 1)]  # bytes at cut 1, 2, ...

    def memory(cut: int) -> int:
        return totals[cut - 1]

    fitting = [cut for cut in range(1, num_layers) if memory(cut) <= memory_gib * GIB]
    device = _device("d", memory_gib, "auto")
    if not fitting:
        with pytest.raises(FleetError, match="no cut fits"):
            resolve_cuts([device], num_layers, memory)
    else:
        assert resolve_cuts([device], num_layers, memory) == [max(fitting)]


def test_tiny_bert_client_bytes_grow_with_the_cut() -> None:
    rng_before = torch.random.get_rng_state()
    memories = [
        client_stage_memory(lambda: tiny_model("bert")[0], cut, LoraSpec(), Task.CLASSIFICATION, 4, 16)
        for cut in (1, 2, 3)
    ]
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the measurement forks the RNG
    totals = [m.total for m in memories]
    assert totals[0] < totals[1] < totals[2]
    layer_params = 4 * (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32) + 2 * 2 * 32  # Q K V O, FFN, two norms
    assert memories[1].weights - memories[0].weights == 4 * layer_params  # fp32 frozen weights of one layer
    for m in memories:
        assert m.received == 4 * 16 * 32 * 4  # the gradient of the (4, 16, 32) fp32 cut tensor
        assert m.gradients == m.trainable and m.optimizer >= 2 * m.trainable  # AdamW: two moments
        assert m.activations > 0


def test_client_memory_model_measures_each_shape_once() -> None:
    built: list[int] = []

    def factory() -> PreTrainedModel:
        built.append(1)
        return tiny_model("bert")[0]

    memory = ClientMemoryModel(factory, LoraSpec(rank=4), Task.CLASSIFICATION)
    of_cut = memory.of_cut(2, 8)
    assert of_cut(1) == of_cut(1) == memory.bytes_at(1, 2, 8)
    assert of_cut(2) > of_cut(1)
    assert len(built) == 2
    assert resolve_cuts([_device("d", 1.0, "auto")], 4, of_cut) == [3]


def test_sgd_clients_need_exactly_adamws_moments_less() -> None:
    def measured(local: LocalOptimizer) -> MemoryBreakdown:
        return client_stage_memory(lambda: tiny_model("bert")[0], 2, LoraSpec(), Task.CLASSIFICATION, 4, 16, local)

    adamw, sgd = measured(LocalOptimizer("adamw")), measured(LocalOptimizer("sgd", weight_decay=0.0))
    assert sgd.optimizer == 0
    assert adamw.optimizer >= 2 * adamw.trainable
    assert adamw.total - sgd.total == adamw.optimizer  # weights, gradients and activations are the same
    sgd_model = ClientMemoryModel(lambda: tiny_model("bert")[0], LoraSpec(), Task.CLASSIFICATION, LocalOptimizer("sgd"))
    assert sgd_model.bytes_at(2, 4, 16) == sgd.total


def test_the_cut_tensor_floor_is_the_fp32_tensor_and_its_gradient() -> None:
    assert cut_tensor_floor(hidden_size=384, batch_size=16, seq_len=128) == 2 * 16 * 128 * 384 * 4 == 6_291_456


def test_a_batch_is_refused_only_when_its_floor_exceeds_the_largest_device() -> None:
    # 2 x 8 x 1024 x 32768 x 4 bytes = 2 GiB exactly: fits a 2 GiB device, not a 1.99 GiB one.
    fleet = Fleet("two", Hardware("srv", 10.0, 16.0, 300.0), (_device("a", 1.0, 1), _device("b", 2.0, 1)))
    check_batch_fits(fleet, hidden_size=32768, batch_size=8, seq_len=1024)
    with pytest.raises(FleetError) as caught:
        check_batch_fits(fleet, hidden_size=32768, batch_size=9, seq_len=1024)
    assert str(caught.value) == (
        "batch_size 9 x max_length 1024: a client's cut tensor and its gradient alone need 2.25 GiB, "
        "more than any device of fleet two has (largest: b, 2.00 GiB); expected a smaller batch_size or max_length"
    )
