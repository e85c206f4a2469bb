"""Typed messages between a client and the server in split training, with their wire encoding."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fleettune.codec import decode_tensors, encode_tensors
from fleettune.errors import InputError


@dataclass(frozen=True)
class CutActivations:
    """Client to server: the cut tensor (B, T, H) with the mask and labels the server needs."""

    client: str
    step: int
    hidden: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def encode(self) -> bytes:
        tensors = {"hidden": self.hidden, "attention_mask": self.attention_mask, "labels": self.labels}
        return encode_tensors(tensors, {"kind": "activations", "client": self.client, "step": str(self.step)})

    @classmethod
    def decode(cls, payload: bytes) -> CutActivations:
        tensors, meta = _checked(payload, "activations", ("hidden", "attention_mask", "labels"))
        return cls(meta["client"], int(meta["step"]), tensors["hidden"], tensors["attention_mask"], tensors["labels"])


@dataclass(frozen=True)
class CutGradients:
    """Server to client: the loss gradient with respect to the cut tensor."""

    client: str
    step: int
    grad: torch.Tensor

    def encode(self) -> bytes:
        return encode_tensors({"grad": self.grad}, {"kind": "gradients", "client": self.client, "step": str(self.step)})

    @classmethod
    def decode(cls, payload: bytes) -> CutGradients:
        tensors, meta = _checked(payload, "gradients", ("grad",))
        return cls(meta["client"], int(meta["step"]), tensors["grad"])


def _checked(payload: bytes, kind: str, names: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors, meta = decode_tensors(payload)
    if meta.get("kind") != kind or "client" not in meta or not meta.get("step", "").isdigit():
        raise InputError(f"expected a {kind} message, got metadata {meta}")
    missing = [n for n in names if n not in tensors]
    if missing:
        raise InputError(f"{kind} message lacks tensors {missing}")
    return tensors, meta
