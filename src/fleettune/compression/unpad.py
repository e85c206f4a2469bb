"""Unpadding: which (batch, position) slots hold real tokens, and a compact wire record of them.

Two forms: `spans`, a (B, 2) tensor of (start, length) per sequence in the smallest integer dtype that holds T,
used when each sequence's real tokens are one contiguous run (right or left padding) and it is the smaller form;
otherwise `mask_bits`, the (B, T) mask packed eight positions per uint8 byte, most significant bit first.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fleettune.compression.base import PartSpec, check_parts, index_dtype
from fleettune.errors import InputError

SPANS = "spans"
BITS = "mask_bits"
_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def real_positions(mask: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """The attention mask as a bool (B, T) tensor; ValueError unless it has that shape and only 0/1 values."""
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"the attention mask must be ({batch}, {length}), got {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask
    real = mask != 0
    if not torch.equal(real, mask == 1):
        raise ValueError("the attention mask must hold only 0 and 1")
    return real


def encode_positions(real: torch.Tensor) -> dict[str, torch.Tensor]:
    """The smaller of the two wire forms of the bool (B, T) mask `real` (spans only when the runs are contiguous)."""
    batch, length = real.shape
    lengths = real.sum(dim=1)
    starts = torch.where(lengths > 0, real.to(torch.uint8).argmax(dim=1), torch.zeros_like(lengths))
    dtype = index_dtype(length)
    span_bytes = 2 * batch * torch.empty(0, dtype=dtype).element_size()
    if span_bytes <= _bits_count(batch, length) and torch.equal(_from_spans(starts, lengths, length), real):
        return {SPANS: torch.stack([starts, lengths], dim=1).to(dtype)}
    return {BITS: pack_bits(real.reshape(-1))}


def decode_positions(parts: Mapping[str, torch.Tensor], batch: int, length: int, what: str) -> torch.Tensor:
    """The bool (B, T) mask rebuilt from whichever form `parts` holds; InputError when it is malformed."""
    if SPANS in parts:
        check_parts(parts, {SPANS: PartSpec((batch, 2), index_dtype(length))}, what)
        spans = parts[SPANS].to(torch.int64)
        starts, lengths = spans[:, 0], spans[:, 1]
        if batch and (int(starts.min()) < 0 or int(lengths.min()) < 0 or int((starts + lengths).max()) > length):
            raise InputError(f"{what}: spans reach outside positions 0..{length}")
        return _from_spans(starts, lengths, length)
    check_parts(parts, {BITS: PartSpec((_bits_count(batch, length),), torch.uint8)}, what)
    return unpack_bits(parts[BITS], batch * length).reshape(batch, length)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """A 1-D bool tensor packed eight per uint8 byte, most significant bit first, zero-padded at the end."""
    padded = torch.zeros(_bits_count(1, bits.numel()) * 8, dtype=torch.uint8, device=bits.device)
    padded[: bits.numel()] = bits
    return (padded.reshape(-1, 8) * _WEIGHTS.to(bits.device)).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """The first `count` bits of `packed` as a 1-D bool tensor."""
    return ((packed[:, None] & _WEIGHTS.to(packed.device)) != 0).reshape(-1)[:count]


def _bits_count(batch: int, length: int) -> int:
    return (batch * length + 7) // 8


def _from_spans(starts: torch.Tensor, lengths: torch.Tensor, length: int) -> torch.Tensor:
    positions = torch.arange(length, device=starts.device)
    return (positions >= starts[:, None]) & (positions < (starts + lengths)[:, None])
