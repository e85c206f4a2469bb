"""Adapter states: read and write a stage's LoRA weights, and convert full <-> client + server parts."""

from __future__ import annotations

import re

import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

from fleettune.errors import ModelError
from fleettune.models.layout import StackLayout

AdapterState = dict[str, torch.Tensor]
"""Trainable adapter weights keyed by their path in the task model, e.g.
'bert.encoder.layer.3.attention.self.query.lora_A.weight' or 'classifier.weight'."""

_PEFT_PREFIX = "base_model.model."


def read_adapter(peft: PeftModel, adapter_name: str = "default") -> AdapterState:
    """A detached copy of the adapter's weights (LoRA factors and trained heads)."""
    state = get_peft_model_state_dict(peft, adapter_name=adapter_name)
    return {k.removeprefix(_PEFT_PREFIX): v.detach().clone() for k, v in state.items()}


def write_adapter(peft: PeftModel, state: AdapterState, adapter_name: str = "default") -> None:
    """Load `state` into the adapter; every adapter weight must be given, and nothing else."""
    expected = set(read_adapter(peft, adapter_name))
    if set(state) != expected:
        missing = sorted(expected - set(state))[:3]
        extra = sorted(set(state) - expected)[:3]
        raise ModelError(f"adapter state does not match the model: missing {missing}, unexpected {extra}")
    result = set_peft_model_state_dict(peft, {_PEFT_PREFIX + k: v for k, v in state.items()}, adapter_name=adapter_name)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k or "modules_to_save" in k]
    if unexpected:
        raise ModelError(f"adapter state keys not loaded: {unexpected[:3]}")


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
