"""Adapter updates through the wire: exact fp32, per-tensor bounds, per-tensor top-k, and error feedback."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from fleettune.codec import decode_tensors, encode_tensors
from fleettune.compression import decode_update, encode_update, parse_update_codec


def adapter(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "layer.0.lora_A.weight": torch.randn(4, 300, generator=generator),
        "layer.0.lora_B.weight": torch.randn(300, 4, generator=generator) * 1e-3,
        "classifier.bias": torch.randn(3, generator=generator),
        "scalar": torch.tensor(0.5),
    }


def through_wire(state: dict[str, torch.Tensor], spec: str) -> dict[str, torch.Tensor]:
    payload = encode_tensors(*encode_update(state, parse_update_codec(spec)))
    return decode_update(*decode_tensors(payload))


def test_fp32_round_trips_exactly_keeping_names_order_and_shapes() -> None:
    state = adapter(0)
    back = through_wire(state, "fp32")
    assert list(back) == list(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_empty_state_round_trips() -> None:
    assert through_wire({}, "int8") == {}


@given(st.integers(0, 2**31 - 1), st.sampled_from(["int8", "int4"]))
def test_quantized_updates_err_by_at_most_half_a_step_per_tensor(seed: int, spec: str) -> None:
    levels = 127 if spec == "int8" else 7
    state = adapter(seed)
    back = through_wire(state, spec)
    for name, tensor in state.items():
        bound = tensor.abs().max() / (2 * levels) * (1 + 1e-4)
        assert torch.all((back[name] - tensor).abs() <= bound), name


shapes = st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple)


@given(st.lists(shapes, max_size=5), st.integers(0, 2**31 - 1), st.integers(-6, 4))
def test_random_states_round_trip_exactly_in_fp32_and_within_bounds_in_int8(
    shape_list: list[tuple[int, ...]], seed: int, exponent: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    state = {f"t{i}": torch.randn(shape, generator=generator) * 10.0**exponent for i, shape in enumerate(shape_list)}
    exact = through_wire(state, "fp32")
    assert list(exact) == list(state) and all(torch.equal(exact[k], v) for k, v in state.items())
    quantized = through_wire(state, "int8")
    for name, tensor in state.items():
        assert quantized[name].shape == tensor.shape
        if tensor.numel():
            assert torch.all((quantized[name] - tensor).abs() <= tensor.abs().max() / 254 * (1 + 1e-4))


def test_fp16_update_relative_error() -> None:
    state = adapter(1)
    back = through_wire(state, "fp16")
    for name, tensor in state.items():
        assert torch.all((back[name] - tensor).abs() <= tensor.abs() * 2.0**-11 + 2.0**-25), name


def test_top_k_is_per_tensor_with_compact_indices() -> None:
    state = adapter(2)
    tensors, metadata = encode_update(state, parse_update_codec("topk:0.1"))
    keeps = [120, 120, 1, 1]  # round(0.1 * numel), at least one
    assert tensors["update.values"].shape == (sum(keeps),)
    assert tensors["update.indices"].dtype == torch.int16  # widest needed: indices up to 1199
    back = decode_update(tensors, metadata)
    for (name, tensor), keep in zip(state.items(), keeps, strict=True):
        kept = back[name] != 0
        assert int(kept.sum()) == keep
        assert torch.equal(back[name][kept], tensor[kept])
        if keep < tensor.numel():
            assert tensor[kept].abs().min() >= tensor[~kept].abs().max()
