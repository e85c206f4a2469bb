"""Adapter payload encoding: exact round trip, byte counts from the encoded bytes, bad payloads."""

from __future__ import annotations

import pytest
import torch

from fleettune.codec import decode_state, encode_state
from fleettune.errors import InputError


def test_encode_decode_round_trips_exactly() -> None:
    state = {"a.lora_A.weight": torch.randn(4, 8), "classifier.bias": torch.arange(3, dtype=torch.float32)}
    back = decode_state(encode_state(state))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_payload_size_is_data_plus_a_small_header() -> None:
    state = {"x": torch.zeros(1000)}
    payload = encode_state(state)
    assert 4000 < len(payload) < 4000 + 200


def test_garbage_payload_is_an_input_error() -> None:
    with pytest.raises(InputError, match="malformed adapter payload"):
        decode_state(b"\x00\x01not safetensors")
