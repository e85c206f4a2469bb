"""Reading and writing adapter states: the same weights as PEFT's own state dict, written into the live model."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model_state_dict

from fleettune.errors import ModelError
from fleettune.models.adapters import read_adapter, write_adapter
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import full_model
from tests.models.tiny import random_batch, tiny_model


def _model(kind: str = "bert"):  # type: ignore[no-untyped-def]
    model, task = tiny_model(kind)
    return full_model(model, LoraSpec(rank=4, dropout=0.0), task), task


@pytest.mark.parametrize("kind", ["bert", "llama-cls"])
def test_read_matches_peft_state_dict_and_is_a_copy(kind: str) -> None:
    model, _ = _model(kind)
    state = read_adapter(model.peft)
    reference = get_peft_model_state_dict(model.peft)
    assert {"base_model.model." + k for k in state} == set(reference)
    for key, value in state.items():
        assert torch.equal(value, reference["base_model.model." + key])
        value.add_(1.0)  # changing the copy leaves the model alone
    assert all(torch.equal(v, read_adapter(model.peft)[k] + 1.0) for k, v in state.items())


def test_write_changes_what_the_model_computes() -> None:
    model, task = _model()
    ids, mask, _ = random_batch(task)
    before = model.logits(ids, mask).detach()
    g = torch.Generator().manual_seed(3)
    state = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in read_adapter(model.peft).items()}
    write_adapter(model.peft, state)
    assert not torch.allclose(model.logits(ids, mask), before)
    reference = get_peft_model_state_dict(model.peft)
    assert all(torch.equal(v, reference["base_model.model." + k]) for k, v in state.items())


def test_a_recreated_adapter_is_found_again() -> None:
    model, _ = _model()
    peft = model.peft
    config = peft.peft_config["default"]
    peft.add_adapter("other", LoraConfig(r=2, target_modules=config.target_modules))
    first = read_adapter(peft, "other")
    peft.delete_adapter("other")
    peft.add_adapter("other", LoraConfig(r=3, target_modules=config.target_modules))
    again = read_adapter(peft, "other")
    assert {v.shape[0] for k, v in again.items() if "lora_A" in k} == {3}
    assert first.keys() == again.keys()


def test_bad_states_are_refused() -> None:
    model, _ = _model()
    state = read_adapter(model.peft)
    key = next(iter(state))
    with pytest.raises(ModelError, match="missing"):
        write_adapter(model.peft, {k: v for k, v in state.items() if k != key})
    with pytest.raises(ModelError, match="unexpected"):
        write_adapter(model.peft, {**state, "nope.weight": torch.zeros(1)})
    with pytest.raises(ModelError, match="shape"):
        write_adapter(model.peft, {**state, key: torch.zeros(7)})
    assert all(torch.equal(v, read_adapter(model.peft)[k]) for k, v in state.items())  # nothing half-written
