"""Wire encoding of adapter states: every byte a report counts is a byte this module produced."""

from __future__ import annotations

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fleettune.errors import InputError

AdapterState = dict[str, torch.Tensor]


def encode_state(state: AdapterState) -> bytes:
    """safetensors bytes of `state` (contiguous CPU copies; key order does not matter)."""
    return st_save({k: v.detach().contiguous().cpu() for k, v in state.items()})


def decode_state(payload: bytes) -> AdapterState:
    try:
        return dict(st_load(payload))
    except Exception as exc:  # safetensors raises its own error types for malformed payloads
        raise InputError(f"malformed adapter payload ({len(payload)} bytes): {exc}") from None
