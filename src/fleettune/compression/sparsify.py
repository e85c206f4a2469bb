"""Top-k sparsification: each row keeps its largest-magnitude entries as float32 values plus their column indices."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fleettune.compression.base import PartSpec, Rows, check_parts, index_dtype, require_rows
from fleettune.errors import InputError


@dataclass(frozen=True)
class TopKCodec:
    """Keeps k = round(FRACTION * W) entries per row (at least one, at most W) and zeroes the rest.

    Selection is per row, so every token keeps the same share and indices need only index one row:
    uint8 up to W = 256, int16 up to W = 32768. Values stay float32, so topk:1 is lossless.
    """

    fraction: float

    @property
    def spec(self) -> str:
        return f"topk:{self.fraction!r}"

    @property
    def lossless(self) -> bool:
        return self.fraction == 1.0

    def keep(self, width: int) -> int:
        """How many entries a row of `width` keeps."""
        return min(width, max(1, math.floor(self.fraction * width + 0.5)))

    def layout(self, shape: Rows) -> dict[str, PartSpec]:
        n, w = shape
        k = self.keep(w)
        return {"values": PartSpec((n, k), torch.float32), "indices": PartSpec((n, k), index_dtype(w - 1))}

    def encode(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        require_rows(rows)
        k = self.keep(rows.shape[1])
        picked = rows.abs().topk(k, dim=1, sorted=False).indices.sort(dim=1).values
        return {"values": rows.gather(1, picked), "indices": picked.to(index_dtype(rows.shape[1] - 1))}

    def decode(self, parts: Mapping[str, torch.Tensor], shape: Rows) -> torch.Tensor:
        check_parts(parts, self.layout(shape), self.spec)
        indices = parts["indices"].to(torch.int64)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= shape[1]):
            raise InputError(f"{self.spec}: indices outside 0..{shape[1] - 1}")
        return torch.zeros(shape, dtype=torch.float32).scatter_(1, indices, parts["values"])
