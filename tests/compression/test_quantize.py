"""Casts and per-row integer quantization: pinned error bounds, packing, zero rows and saturation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fleettune.compression import parse_cut_codec
from fleettune.compression.quantize import pack_nibbles, unpack_nibbles

# Rounding q = round(x / s) errs by at most s / 2 = absmax / (2 L); float32 division and the decode product add
# a few units in the last place, far below this slack.
SLACK = 1 + 1e-4


def rows_of(seed: int, n: int, w: int, exponent: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, w, generator=generator) * 10.0**exponent


def int_bound(rows: torch.Tensor, levels: int) -> torch.Tensor:
    """absmax / (2 L) per row, broadcast over the row."""
    return (rows.abs().amax(dim=1, keepdim=True) / (2 * levels) * SLACK).expand_as(rows)


@given(st.integers(0, 2**31 - 1), st.integers(1, 9), st.integers(1, 40), st.integers(-8, 6))
def test_int8_error_is_at_most_half_a_step_per_row(seed: int, n: int, w: int, exponent: int) -> None:
    rows = rows_of(seed, n, w, exponent)
    codec = parse_cut_codec("int8")
    parts = codec.encode(rows)
    assert parts["q"].dtype == torch.int8 and int(parts["q"].abs().max()) == 127  # the absmax maps to +-127
    assert torch.all((codec.decode(parts, (n, w)) - rows).abs() <= int_bound(rows, 127))


@given(st.integers(0, 2**31 - 1), st.integers(1, 9), st.integers(1, 40), st.integers(-8, 6))
def test_int4_error_is_at_most_half_a_step_per_row(seed: int, n: int, w: int, exponent: int) -> None:
    rows = rows_of(seed, n, w, exponent)
    codec = parse_cut_codec("int4")
    parts = codec.encode(rows)
    assert parts["q"].shape == ((n * w + 1) // 2,)
    nibbles = unpack_nibbles(parts["q"], n * w)
    assert int(nibbles.min()) >= 1 and int(nibbles.max()) <= 15  # q + 8 with q in -7..7
    assert torch.all((codec.decode(parts, (n, w)) - rows).abs() <= int_bound(rows, 7))


@pytest.mark.parametrize("spec", ["int8", "int4"])
def test_quantization_is_exact_on_zero_rows_and_on_the_grid(spec: str) -> None:
    levels = 127 if spec == "int8" else 7
    rows = torch.zeros(3, 5)
    rows[1] = torch.tensor([-levels, -1, 0, 2, levels], dtype=torch.float32) * 0.5
    codec = parse_cut_codec(spec)
    parts = codec.encode(rows)
    assert parts["scale"].tolist() == [0.0, 0.5, 0.0]
    assert torch.equal(codec.decode(parts, (3, 5)), rows)


def test_nibbles_pack_two_per_byte_high_first_and_unpack_exactly() -> None:
    values = torch.tensor([1, 2, 15, 0, 7], dtype=torch.uint8)
    packed = pack_nibbles(values)
    assert packed.tolist() == [0x12, 0xF0, 0x70]
    assert torch.equal(unpack_nibbles(packed, 5), values)


@given(st.integers(0, 2**31 - 1), st.integers(1, 9), st.integers(1, 40), st.integers(-4, 4))
def test_fp16_and_bf16_errors_are_half_an_ulp(seed: int, n: int, w: int, exponent: int) -> None:
    rows = rows_of(seed, n, w, exponent)
    for spec, relative, absolute in (("fp16", 2.0**-11, 2.0**-25), ("bf16", 2.0**-8, 0.0)):
        codec = parse_cut_codec(spec)
        error = (codec.decode(codec.encode(rows), (n, w)) - rows).abs()
        # Relative rounding in the normal range; fp16's subnormals (below 2**-14) round to a grid of 2**-24.
        assert torch.all(error <= torch.clamp(rows.abs() * relative, min=absolute))


def test_fp16_saturates_instead_of_overflowing() -> None:
    rows = torch.tensor([[1e6, -1e6, 1.0]])
    codec = parse_cut_codec("fp16")
    assert codec.decode(codec.encode(rows), (1, 3)).tolist() == [[65504.0, -65504.0, 1.0]]


def test_encoders_reject_anything_but_a_float32_matrix() -> None:
    for spec in ("fp32", "int8", "topk:0.5"):
        with pytest.raises(ValueError, match="float32"):
            parse_cut_codec(spec).encode(torch.zeros(2, 3, 4))
        with pytest.raises(ValueError, match="float32"):
            parse_cut_codec(spec).encode(torch.zeros(2, 3, dtype=torch.float64))
