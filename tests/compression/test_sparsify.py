"""Top-k: exactly k entries per row, the largest in magnitude, compact indices, exact values."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fleettune.compression import TopKCodec, parse_cut_codec


@pytest.mark.parametrize(
    ("fraction", "width", "keep"),
    [(0.1, 384, 38), (0.25, 384, 96), (0.5, 3, 2), (0.01, 10, 1), (1.0, 7, 7), (0.3, 10, 3)],
)
def test_keep_count_is_fraction_of_the_row_rounded_with_at_least_one(fraction: float, width: int, keep: int) -> None:
    assert TopKCodec(fraction).keep(width) == keep


@given(st.integers(0, 2**31 - 1), st.integers(1, 8), st.integers(1, 300), st.floats(0.001, 1.0))
def test_top_k_keeps_exactly_k_largest_entries_per_row_exactly(seed: int, n: int, w: int, fraction: float) -> None:
    rows = torch.randn(n, w, generator=torch.Generator().manual_seed(seed))
    codec = TopKCodec(fraction)
    k = codec.keep(w)
    parts = codec.encode(rows)
    indices = parts["indices"].to(torch.int64)
    assert indices.shape == (n, k)
    assert parts["indices"].dtype == (torch.uint8 if w <= 256 else torch.int16)
    assert all(len(set(row.tolist())) == k for row in indices)  # k distinct positions per row
    decoded = codec.decode(parts, (n, w))
    kept = torch.zeros(n, w, dtype=torch.bool).scatter_(1, indices, True)
    assert torch.equal(decoded[kept], rows[kept])  # kept values travel exactly
    assert torch.all(decoded[~kept] == 0)
    if k < w:  # every kept magnitude is at least every dropped magnitude in the same row
        smallest_kept = rows.abs().masked_fill(~kept, float("inf")).amin(dim=1)
        largest_dropped = rows.abs().masked_fill(kept, -1.0).amax(dim=1)
        assert torch.all(smallest_kept >= largest_dropped)


def test_top_k_picks_the_known_entries() -> None:
    rows = torch.tensor([[0.1, -5.0, 2.0, 0.0, 3.0], [1.0, 1.5, -0.5, 4.0, -2.0]])
    codec = parse_cut_codec("topk:0.4")
    parts = codec.encode(rows)
    assert parts["indices"].tolist() == [[1, 4], [3, 4]]
    assert codec.decode(parts, (2, 5)).tolist() == [[0.0, -5.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 4.0, -2.0]]
