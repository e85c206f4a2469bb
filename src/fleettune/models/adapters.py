"""Adapter states: read and write a stage's LoRA weights, and convert full <-> client + server parts."""

from __future__ import annotations

import re
import weakref

import torch
from peft import PeftModel, get_peft_model_state_dict
from torch import nn

from fleettune.errors import ModelError
from fleettune.models.layout import StackLayout

AdapterState = dict[str, torch.Tensor]
"""Trainable adapter weights keyed by their path in the task model, e.g.
'bert.encoder.layer.3.attention.self.query.lora_A.weight' or 'classifier.weight'."""

_PEFT_PREFIX = "base_model.model."


class _AdapterSlots:
    """The live parameter behind each key of an adapter's state, found once per (model, adapter).

    PEFT's state-dict walk visits every module of the model; aggregating every round reads and
    writes a dozen adapters, so the walk is done once and the parameters it names are kept. Loading
    copies into those same tensors in place, so they stay the model's own."""

    def __init__(self) -> None:
        self._slots: weakref.WeakKeyDictionary[PeftModel, dict[str, tuple[object, dict[str, torch.Tensor]]]] = (
            weakref.WeakKeyDictionary()
        )

    def of(self, peft: PeftModel, adapter_name: str) -> dict[str, torch.Tensor]:
        per_model = self._slots.setdefault(peft, {})
        config = peft.peft_config.get(adapter_name)  # a new object whenever the adapter is (re)created
        cached = per_model.get(adapter_name)
        if cached is not None and config is not None and cached[0] is config:
            return cached[1]
        slots = _find_slots(peft, adapter_name)
        per_model[adapter_name] = (config, slots)
        return slots


def _find_slots(peft: PeftModel, adapter_name: str) -> dict[str, torch.Tensor]:
    by_storage = {(p.data_ptr(), p.shape): p for p in peft.parameters()}
    slots: dict[str, torch.Tensor] = {}
    for key, value in get_peft_model_state_dict(peft, adapter_name=adapter_name).items():
        parameter = by_storage.get((value.data_ptr(), value.shape))
        if parameter is None:
            raise ModelError(f"adapter weight {key} is not a parameter of the model")
        slots[key.removeprefix(_PEFT_PREFIX)] = parameter
    return slots


_SLOTS = _AdapterSlots()


def read_adapter(peft: PeftModel, adapter_name: str = "default") -> AdapterState:
    """A detached copy of the adapter's weights (LoRA factors and trained heads)."""
    return {k: p.detach().clone() for k, p in _SLOTS.of(peft, adapter_name).items()}


def write_adapter(peft: PeftModel, state: AdapterState, adapter_name: str = "default") -> None:
    """Load `state` into the adapter; every adapter weight must be given, and nothing else."""
    slots = _SLOTS.of(peft, adapter_name)
    if state.keys() != slots.keys():
        missing = sorted(slots.keys() - state.keys())[:3]
        extra = sorted(state.keys() - slots.keys())[:3]
        raise ModelError(f"adapter state does not match the model: missing {missing}, unexpected {extra}")
    wrong = [k for k, p in slots.items() if state[k].shape != p.shape]
    if wrong:
        key = wrong[0]
        raise ModelError(
            f"adapter weight {key} has shape {tuple(state[key].shape)}, the model expects {tuple(slots[key].shape)}"
        )
    with torch.no_grad():
        for key, parameter in slots.items():
            parameter.copy_(state[key])


def task_model(peft: PeftModel) -> nn.Module:
    """The model a PEFT wrapper adapts (LoRA layers in place): adapter keys are paths in it."""
    inner = peft.base_model.model
    assert isinstance(inner, nn.Module)
    return inner


def _layer_pattern(layout: StackLayout) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(layout.layers)}\.(\d+)\.")


def _renumber(key: str, pattern: re.Pattern[str], shift: int) -> str:
    match = pattern.match(key)
    assert match is not None
    start, end = match.span(1)
    return f"{key[:start]}{int(match.group(1)) + shift}{key[end:]}"


def split_adapter(
    full: AdapterState, layout: StackLayout, cut: int, server_first: int | None = None
) -> tuple[AdapterState, AdapterState]:
    """Client part (embeddings-side and layers < cut) and server part (layers >= cut plus heads,
    renumbered as a server stage whose first layer is `server_first` numbers them; default `cut`)."""
    first = cut if server_first is None else server_first
    pattern = _layer_pattern(layout)
    client: AdapterState = {}
    server: AdapterState = {}
    for key, value in full.items():
        match = pattern.match(key)
        if match is not None:
            index = int(match.group(1))
            if index < cut:
                client[key] = value
            else:
                server[_renumber(key, pattern, -first)] = value
        elif key.startswith(layout.embeddings + "."):
            client[key] = value
        else:
            server[key] = value
    return client, server


def join_adapter(
    client: AdapterState, server: AdapterState, layout: StackLayout, cut: int, server_first: int | None = None
) -> AdapterState:
    """The full adapter whose split at `cut` is (client, server): the exact inverse of split_adapter."""
    first = cut if server_first is None else server_first
    pattern = _layer_pattern(layout)
    full: AdapterState = dict(client)
    for key in client:
        match = pattern.match(key)
        if match is not None and int(match.group(1)) >= cut:
            raise ModelError(f"client adapter key {key} lies beyond its cut layer {cut}")
    for key, value in server.items():
        full_key = _renumber(key, pattern, first) if pattern.match(key) else key
        if full_key in full:
            raise ModelError(f"adapter key {full_key} is in both the client and the server part")
        full[full_key] = value
    return full
