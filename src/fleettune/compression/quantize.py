"""Lossy value codecs: casts to 16-bit floats and symmetric per-row integer quantization (int8, packed int4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fleettune.compression.base import PartSpec, Rows, check_parts, require_rows


@dataclass(frozen=True)
class CastCodec:
    """Sends the rows as one `values` tensor of `dtype`; fp32 is lossless, 16-bit casts saturate at the dtype's max.

    Saturating (rather than overflowing to inf) keeps a rare huge activation from poisoning the server's step.
    """

    spec: str
    dtype: torch.dtype

    @property
    def lossless(self) -> bool:
        return self.dtype == torch.float32

    def layout(self, shape: Rows) -> dict[str, PartSpec]:
        return {"values": PartSpec(shape, self.dtype)}

    def encode(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        require_rows(rows)
        if self.lossless:
            return {"values": rows}
        limit = torch.finfo(self.dtype).max
        return {"values": rows.clamp(-limit, limit).to(self.dtype)}

    def decode(self, parts: Mapping[str, torch.Tensor], shape: Rows) -> torch.Tensor:
        check_parts(parts, self.layout(shape), self.spec)
        return parts["values"].to(torch.float32)


@dataclass(frozen=True)
class IntCodec:
    """Symmetric absmax quantization with one float32 scale per row: q = round(x / s), s = absmax / L.

    L is 127 for 8 bits (q stored as int8) and 7 for 4 bits (q + 8 stored as two nibbles per uint8 byte,
    high nibble first). The scale is float32 rather than fp16 because gradient rows can be far below fp16's
    smallest normal number; at H = 384 it costs 4 bytes per 384 values. The error is at most s / 2 per value.
    """

    spec: str
    bits: int

    @property
    def levels(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def lossless(self) -> bool:
        return False

    def layout(self, shape: Rows) -> dict[str, PartSpec]:
        n, w = shape
        values = PartSpec(shape, torch.int8) if self.bits == 8 else PartSpec(((n * w + 1) // 2,), torch.uint8)
        return {"q": values, "scale": PartSpec((n,), torch.float32)}

    def encode(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        require_rows(rows)
        absmax = rows.abs().amax(dim=1) if rows.shape[1] else rows.new_zeros(rows.shape[0])
        scale = absmax / self.levels
        divisor = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(rows / divisor[:, None]).clamp_(-self.levels, self.levels)
        if self.bits == 8:
            return {"q": q.to(torch.int8), "scale": scale}
        return {"q": pack_nibbles((q + 8).to(torch.uint8).reshape(-1)), "scale": scale}

    def decode(self, parts: Mapping[str, torch.Tensor], shape: Rows) -> torch.Tensor:
        check_parts(parts, self.layout(shape), self.spec)
        n, w = shape
        if self.bits == 8:
            q = parts["q"].to(torch.float32)
        else:
            q = (unpack_nibbles(parts["q"], n * w).to(torch.float32) - 8).reshape(n, w)
        return q * parts["scale"][:, None]


def pack_nibbles(values: torch.Tensor) -> torch.Tensor:
    """Two values in 0..15 per byte (the first in the high nibble); an odd count is padded with one zero nibble."""
    if values.numel() % 2:
        values = torch.cat([values, values.new_zeros(1)])
    pairs = values.reshape(-1, 2)
    return (pairs[:, 0] << 4) | pairs[:, 1]


def unpack_nibbles(packed: torch.Tensor, count: int) -> torch.Tensor:
    """The first `count` nibbles of `packed`, as uint8 values in 0..15."""
    return torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1)[:count]
