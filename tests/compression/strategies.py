"""Hypothesis strategies for cut tensors: random shapes, magnitudes and attention masks of every padding style."""

from __future__ import annotations

import torch
from hypothesis import strategies as st


def mask_from_lengths(lengths: list[int], length: int, left: bool) -> torch.Tensor:
    """A (B, T) int64 0/1 mask whose rows hold `lengths` real tokens, padded on the right or on the left."""
    positions = torch.arange(length)
    real = torch.tensor(lengths)[:, None]
    mask = positions >= length - real if left else positions < real
    return mask.to(torch.int64)


@st.composite
def cut_cases(draw: st.DrawFn, max_width: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 (B, T, H) tensor of mixed magnitudes with a right-, left- or randomly padded mask."""
    batch = draw(st.integers(1, 4))
    length = draw(st.integers(1, 10))
    width = draw(st.integers(1, max_width))
    style = draw(st.sampled_from(["right", "left", "scattered"]))
    if style == "scattered":
        bits = draw(st.lists(st.booleans(), min_size=batch * length, max_size=batch * length))
        mask = torch.tensor(bits, dtype=torch.int64).reshape(batch, length)
    else:
        lengths = draw(st.lists(st.integers(0, length), min_size=batch, max_size=batch))
        mask = mask_from_lengths(lengths, length, left=style == "left")
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    magnitude = 10.0 ** draw(st.integers(-6, 4))
    x = torch.randn(batch, length, width, generator=generator) * magnitude
    if draw(st.booleans()):
        x[0, 0] = 0.0  # an all-zero token row must survive quantization too
    return x, mask
