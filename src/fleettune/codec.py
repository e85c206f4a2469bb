"""Wire encoding of tensors and adapter states: every byte a report counts is a byte produced here."""

from __future__ import annotations

import json
import struct

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fleettune.errors import InputError

AdapterState = dict[str, torch.Tensor]


def encode_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """safetensors bytes of `tensors` (contiguous CPU copies) with optional string metadata."""
    return st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)


def decode_tensors(payload: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        tensors = dict(st_load(payload))
        (header_len,) = struct.unpack("<Q", payload[:8])
        header = json.loads(payload[8 : 8 + header_len])
    except Exception as exc:  # safetensors raises its own error types for malformed payloads
        raise InputError(f"malformed tensor payload ({len(payload)} bytes): {exc}") from None
    return tensors, dict(header.get("__metadata__", {}))


def encode_state(state: AdapterState) -> bytes:
    return encode_tensors(state)


def decode_state(payload: bytes) -> AdapterState:
    try:
        return dict(st_load(payload))
    except Exception as exc:
        raise InputError(f"malformed adapter payload ({len(payload)} bytes): {exc}") from None
