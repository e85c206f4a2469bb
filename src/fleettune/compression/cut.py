"""Encoding of cut tensors (activations and their gradients, float32 (B, T, H)) for the split-training messages.

Every token is a row of H values for the codec. With unpadding only the rows of real tokens travel, with the
record of their positions, and decoding puts zeros at the padded positions. The attention mask that travels
with activations uses the same compact record (`encode_cut_with_mask`): a few bytes instead of a (B, T) int64 tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fleettune.compression.base import Codec, format_dims, parse_dims
from fleettune.compression.specs import codec_in_payload
from fleettune.compression.unpad import decode_positions, encode_positions, real_positions
from fleettune.errors import InputError

ALL_ROWS = "all"
REAL_ROWS = "real"


def encode_cut(
    x: torch.Tensor, mask: torch.Tensor | None, codec: Codec, unpad: bool, *, prefix: str = "cut"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Named tensors and string metadata for `x`; all keys start with `prefix` + "." so they can share a message.

    Metadata: `<prefix>.codec` (the codec spec), `<prefix>.shape` ("B,T,H"), `<prefix>.rows` ("all" or "real").
    Unpadding needs the (B, T) 0/1 attention mask; without unpadding the mask is not used.
    """
    if x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f"a cut tensor is a floating (B, T, H) tensor, got {x.dtype} {tuple(x.shape)}")
    batch, length, width = x.shape
    values = x.detach().to(torch.float32)
    if unpad:
        if mask is None:
            raise ValueError("unpadding a cut tensor needs its attention mask")
        real = real_positions(mask.to(x.device), batch, length)
        parts = {**codec.encode(values[real]), **encode_positions(real)}
    else:
        parts = codec.encode(values.reshape(batch * length, width))
    metadata = {
        f"{prefix}.codec": codec.spec,
        f"{prefix}.shape": format_dims((batch, length, width)),
        f"{prefix}.rows": REAL_ROWS if unpad else ALL_ROWS,
    }
    return {f"{prefix}.{name}": part for name, part in parts.items()}, metadata


def decode_cut(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], *, prefix: str = "cut"
) -> torch.Tensor:
    """The float32 (B, T, H) tensor from encode_cut's output; InputError when parts or metadata are malformed."""
    return _decode(tensors, metadata, prefix)[0]


def encode_cut_with_mask(
    x: torch.Tensor, mask: torch.Tensor, codec: Codec, unpad: bool, *, prefix: str = "cut", mask_prefix: str = "mask"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """encode_cut plus the (B, T) 0/1 attention mask in the compact positions form of
    `fleettune.compression.unpad` under `mask_prefix`; an unpadded tensor's own positions record is the mask."""
    parts, metadata = encode_cut(x, mask, codec, unpad, prefix=prefix)
    if not unpad:
        batch, length = x.shape[:2]
        real = real_positions(mask.to(x.device), batch, length)
        parts.update({f"{mask_prefix}.{name}": part for name, part in encode_positions(real).items()})
    return parts, metadata


def decode_cut_with_mask(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], *, prefix: str = "cut", mask_prefix: str = "mask"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cut tensor and its int64 0/1 (B, T) attention mask from encode_cut_with_mask's output; InputError when
    either is missing or malformed."""
    out, real = _decode(tensors, metadata, prefix)
    if real is None:
        batch, length = out.shape[:2]
        real = decode_positions(_parts(tensors, mask_prefix), batch, length, f"{mask_prefix} positions")
    return out, real.to(torch.int64)


def _parts(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix) + 1 :]: part for name, part in tensors.items() if name.startswith(f"{prefix}.")}


def _decode(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], prefix: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The cut tensor, and the bool positions of its real rows when it was unpadded (None when padded)."""
    what = f"{prefix} tensor"
    codec = codec_in_payload(metadata.get(f"{prefix}.codec"), what)
    batch, length, width = parse_dims(metadata.get(f"{prefix}.shape"), 3, f"{what} shape")
    parts = _parts(tensors, prefix)
    rows = metadata.get(f"{prefix}.rows")
    if rows == ALL_ROWS:
        return codec.decode(parts, (batch * length, width)).reshape(batch, length, width), None
    if rows != REAL_ROWS:
        raise InputError(f"{what}: rows must be {ALL_ROWS!r} or {REAL_ROWS!r}, got {rows!r}")
    real = decode_positions(parts, batch, length, what)
    out = torch.zeros(batch, length, width, dtype=torch.float32)
    out[real] = codec.decode(parts, (int(real.sum()), width))
    return out, real
