"""Encoding of cut tensors (activations and their gradients, float32 (B, T, H)) for the split-training messages.

Every token is a row of H values for the codec. With unpadding only the rows of real tokens travel, with the
record of their positions, and decoding puts zeros at the padded positions. The attention mask that travels
with activations uses the same compact record (`encode_mask`): a few bytes instead of a (B, T) int64 tensor.
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
    what = f"{prefix} tensor"
    codec = codec_in_payload(metadata.get(f"{prefix}.codec"), what)
    batch, length, width = parse_dims(metadata.get(f"{prefix}.shape"), 3, f"{what} shape")
    parts = {name[len(prefix) + 1 :]: part for name, part in tensors.items() if name.startswith(f"{prefix}.")}
    rows = metadata.get(f"{prefix}.rows")
    if rows == ALL_ROWS:
        return codec.decode(parts, (batch * length, width)).reshape(batch, length, width)
    if rows != REAL_ROWS:
        raise InputError(f"{what}: rows must be {ALL_ROWS!r} or {REAL_ROWS!r}, got {rows!r}")
    real = decode_positions(parts, batch, length, what)
    out = torch.zeros(batch, length, width, dtype=torch.float32)
    out[real] = codec.decode(parts, (int(real.sum()), width))
    return out


def encode_mask(mask: torch.Tensor, batch: int, length: int, *, prefix: str = "mask") -> dict[str, torch.Tensor]:
    """The (B, T) 0/1 attention mask in the compact form of `fleettune.compression.unpad`, keys under `prefix`."""
    return {f"{prefix}.{name}": part for name, part in encode_positions(real_positions(mask, batch, length)).items()}


def decode_mask(tensors: Mapping[str, torch.Tensor], batch: int, length: int, *, prefix: str = "mask") -> torch.Tensor:
    """The int64 0/1 (B, T) attention mask from the positions record under `prefix` (`encode_mask`, or an
    unpadded cut tensor's own record); InputError when it is missing or malformed."""
    parts = {name[len(prefix) + 1 :]: part for name, part in tensors.items() if name.startswith(f"{prefix}.")}
    return decode_positions(parts, batch, length, f"{prefix} positions").to(torch.int64)
