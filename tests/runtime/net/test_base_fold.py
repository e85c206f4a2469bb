"""The pieces flora's deployment adds to the wire: a join state with base-weight updates, and the FOLD."""

from __future__ import annotations

import pytest
import torch

from fleettune.compression import parse_update_codec, receive_state, send_state
from fleettune.errors import InputError
from fleettune.runtime.net.base_fold import accumulate, split_base, with_base
from fleettune.runtime.net.protocol import Do, Instruction


def test_a_join_state_carries_the_adapter_and_the_base_updates_exactly() -> None:
    part = {"layer.0.q.lora_A.weight": torch.randn(2, 4), "layer.0.q.lora_B.weight": torch.zeros(4, 2)}
    update = {"layer.0.q": torch.randn(4, 4)}
    payload = send_state(parse_update_codec("fp32"), with_base(part, update))
    got_part, got_update = split_base(receive_state(payload))
    assert got_part.keys() == part.keys() and got_update.keys() == update.keys()
    assert all(torch.equal(got_part[k], v) for k, v in part.items())
    assert torch.equal(got_update["layer.0.q"], update["layer.0.q"])
    assert split_base(part) == (part, {})


def test_base_updates_without_an_adapter_are_refused() -> None:
    with pytest.raises(InputError, match="no adapter"):
        split_base(with_base({}, {"layer.0.q": torch.zeros(2, 2)}))


def test_accumulate_sums_in_place_without_aliasing() -> None:
    first = {"a": torch.ones(2)}
    total: dict[str, torch.Tensor] = {}
    accumulate(total, first)
    accumulate(total, {"a": torch.full((2,), 2.0), "b": torch.zeros(1)})
    assert torch.equal(total["a"], torch.full((2,), 3.0)) and torch.equal(first["a"], torch.ones(2))
    assert set(total) == {"a", "b"}


def test_a_fold_round_trips_its_rank_and_version() -> None:
    sent = Instruction(Do.FOLD, 4, payload=b"x", stacked_rank=14, version=7)
    got = Instruction.parse(sent.fields(), b"x")
    assert (got.do, got.round, got.stacked_rank, got.version) == (Do.FOLD, 4, 14, 7)
    plain = Instruction(Do.LOAD, 4, payload=b"x")
    assert "stacked_rank" not in plain.fields() and Instruction.parse(plain.fields(), b"x").stacked_rank == 0


def test_a_malformed_stacked_rank_is_an_input_error() -> None:
    fields = {**Instruction(Do.FOLD, 1, stacked_rank=3, version=1).fields(), "stacked_rank": "three"}
    with pytest.raises(InputError, match="malformed instruction"):
        Instruction.parse(fields, b"")
    with pytest.raises(InputError, match="stacked_rank must be >= 1"):
        Instruction.parse({**fields, "stacked_rank": "0"}, b"")
