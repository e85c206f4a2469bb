"""The codec protocol shared by cut tensors and adapter updates, and the checks on encoded parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch

from fleettune.errors import InputError

Rows = tuple[int, int]


@dataclass(frozen=True)
class PartSpec:
    """The shape and dtype one encoded part must have, so a decoder can reject malformed input up front."""

    shape: tuple[int, ...]
    dtype: torch.dtype


class Codec(Protocol):
    """Encodes a float32 matrix of rows (N, W) into named tensors and decodes them back to float32 (N, W).

    A row is the unit of scaling and of top-k selection: one token's H values in a cut tensor, one whole
    flattened tensor in an adapter update.
    """

    @property
    def spec(self) -> str:
        """The canonical spec string; parsing it gives an equal codec (it travels in the metadata)."""
        ...

    @property
    def lossless(self) -> bool:
        """True when decode(encode(rows)) equals float32 rows exactly."""
        ...

    def layout(self, shape: Rows) -> dict[str, PartSpec]:
        """The parts, with shapes and dtypes, that encoding a (N, W) matrix produces."""
        ...

    def encode(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named parts of a float32 (N, W) matrix of finite values."""
        ...

    def decode(self, parts: Mapping[str, torch.Tensor], shape: Rows) -> torch.Tensor:
        """The float32 (N, W) matrix rebuilt from parts; raises InputError when they do not match layout(shape)."""
        ...


def check_parts(parts: Mapping[str, torch.Tensor], layout: Mapping[str, PartSpec], what: str) -> None:
    """Raise InputError unless every part of `layout` is present with its exact shape and dtype."""
    for name, spec in layout.items():
        if name not in parts:
            raise InputError(f"{what}: missing part {name!r}")
        part = parts[name]
        if part.dtype != spec.dtype or tuple(part.shape) != spec.shape:
            raise InputError(
                f"{what}: part {name!r} is {part.dtype} {tuple(part.shape)}, expected {spec.dtype} {spec.shape}"
            )


def index_dtype(max_value: int) -> torch.dtype:
    """The smallest integer dtype safetensors stores that holds 0..max_value."""
    if max_value <= torch.iinfo(torch.uint8).max:
        return torch.uint8
    if max_value <= torch.iinfo(torch.int16).max:
        return torch.int16
    if max_value <= torch.iinfo(torch.int32).max:
        return torch.int32
    return torch.int64


def require_rows(rows: torch.Tensor) -> None:
    """Raise ValueError unless `rows` is a float32 matrix: encoders are called by code, not by users."""
    if rows.dim() != 2 or rows.dtype != torch.float32:
        raise ValueError(f"a codec encodes a float32 (N, W) matrix, got {rows.dtype} {tuple(rows.shape)}")


def parse_dims(text: str | None, count: int, what: str) -> tuple[int, ...]:
    """Parse "d0,d1,..." metadata into `count` non-negative ints; InputError when it does not fit."""
    pieces = (text or "").split(",")
    if text is None or len(pieces) != count or not all(p.isascii() and p.isdigit() for p in pieces):
        raise InputError(f"{what}: expected {count} comma-separated sizes, got {text!r}")
    return tuple(int(p) for p in pieces)


def format_dims(dims: tuple[int, ...]) -> str:
    """The metadata form of a shape, read back by parse_dims."""
    return ",".join(str(d) for d in dims)
