"""Typed messages between a client and the server in split training, with their wire encoding.

The cut tensor travels through a codec (`fleettune.compression`): fp32 padded by default, or cast,
quantised, sparsified and/or unpadded. Decoding needs no settings: the payload says how it was encoded.
The attention mask travels as a compact positions record, which an unpadded cut tensor already carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fleettune.codec import decode_tensors, encode_tensors
from fleettune.compression import (
    Codec,
    decode_cut,
    decode_cut_with_mask,
    encode_cut,
    encode_cut_with_mask,
    parse_cut_codec,
)
from fleettune.errors import InputError

CUT = "cut"
MASK = "mask"


@dataclass(frozen=True)
class CutWire:
    """How cut tensors are encoded in each direction, and whether only real tokens travel."""

    activations: Codec = field(default_factory=lambda: parse_cut_codec("fp32"))
    gradients: Codec = field(default_factory=lambda: parse_cut_codec("fp32", "compression.gradients"))
    unpad: bool = False

    @property
    def lossless(self) -> bool:
        return self.activations.lossless and self.gradients.lossless


FP32_PADDED = CutWire()


@dataclass(frozen=True)
class CutActivations:
    """Client to server: the cut tensor (B, T, H) with the mask and labels the server needs."""

    client: str
    step: int
    hidden: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def encode(self, wire: CutWire = FP32_PADDED) -> bytes:
        parts, meta = encode_cut_with_mask(
            self.hidden, self.attention_mask, wire.activations, wire.unpad, prefix=CUT, mask_prefix=MASK
        )
        tensors = {**parts, "labels": self.labels}
        return encode_tensors(tensors, {**meta, "kind": "activations", "client": self.client, "step": str(self.step)})

    @classmethod
    def decode(cls, payload: bytes) -> CutActivations:
        tensors, meta = _checked(payload, "activations", ("labels",))
        hidden, mask = decode_cut_with_mask(tensors, meta, prefix=CUT, mask_prefix=MASK)
        return cls(meta["client"], int(meta["step"]), hidden, mask, tensors["labels"])


@dataclass(frozen=True)
class CutGradients:
    """Server to client: the loss gradient with respect to the cut tensor.

    With unpadding, `attention_mask` tells which rows are real; the gradient at padded positions is
    zero (attention never reads padded keys and no head reads padded outputs), so nothing is lost.
    """

    client: str
    step: int
    grad: torch.Tensor

    def encode(self, wire: CutWire = FP32_PADDED, attention_mask: torch.Tensor | None = None) -> bytes:
        if wire.unpad and attention_mask is None:
            raise ValueError("unpadding a cut gradient needs the batch's attention mask")
        parts, meta = encode_cut(self.grad, attention_mask, wire.gradients, wire.unpad, prefix=CUT)
        return encode_tensors(parts, {**meta, "kind": "gradients", "client": self.client, "step": str(self.step)})

    @classmethod
    def decode(cls, payload: bytes) -> CutGradients:
        tensors, meta = _checked(payload, "gradients", ())
        return cls(meta["client"], int(meta["step"]), decode_cut(tensors, meta, prefix=CUT))


def _checked(payload: bytes, kind: str, names: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors, meta = decode_tensors(payload)
    if meta.get("kind") != kind or "client" not in meta or not meta.get("step", "").isdigit():
        raise InputError(f"expected a {kind} message, got metadata {meta}")
    missing = [n for n in names if n not in tensors]
    if missing:
        raise InputError(f"{kind} message lacks tensors {missing}")
    return tensors, meta
