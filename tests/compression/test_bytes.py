"""Golden wire sizes of a (16, 128, 384) cut tensor, measured on the encoded safetensors bytes.

Data bytes follow from the formats (N rows of H = 384 values): fp32 4NH, fp16/bf16 2NH, int8 NH + 4N (float32
scale per row), int4 NH/2 + 4N, topk:0.1 keeps 38 of 384 per row as float32 values + int16 indices = 6 * 38 N.
Unpadding keeps N = 384 real rows of 2048 (24 per sequence on average) plus 16 uint8 (start, length) spans.
"""

from __future__ import annotations

import pytest
import torch

from fleettune.codec import encode_tensors
from fleettune.compression import encode_cut, encode_update, parse_cut_codec, parse_update_codec
from tests.compression.strategies import mask_from_lengths

B, T, H = 16, 128, 384
LENGTHS = [16, 18, 20, 22, 24, 26, 28, 30, 32, 30, 28, 26, 24, 22, 20, 18]
HEADER = 400  # the JSON header: a handful of tensor entries and the cut metadata


def data_bytes(spec: str, rows: int) -> int:
    per_row = {"fp32": 4 * H, "fp16": 2 * H, "bf16": 2 * H, "int8": H + 4, "int4": H // 2 + 4, "topk:0.1": 6 * 38}
    return rows * per_row[spec]


@pytest.fixture(scope="module")
def cut() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(B, T, H, generator=torch.Generator().manual_seed(0))
    return x, mask_from_lengths(LENGTHS, T, left=False)


def wire_size(x: torch.Tensor, mask: torch.Tensor, spec: str, unpad: bool) -> int:
    return len(encode_tensors(*encode_cut(x, mask, parse_cut_codec(spec), unpad)))


@pytest.mark.parametrize("spec", ["fp32", "fp16", "bf16", "int8", "int4", "topk:0.1"])
@pytest.mark.parametrize("unpad", [False, True])
def test_wire_size_is_the_format_data_plus_a_small_header(
    cut: tuple[torch.Tensor, torch.Tensor], spec: str, unpad: bool
) -> None:
    x, mask = cut
    expected = data_bytes(spec, sum(LENGTHS)) + 2 * B if unpad else data_bytes(spec, B * T)
    assert expected <= wire_size(x, mask, spec, unpad) <= expected + HEADER


@pytest.mark.parametrize(
    ("spec", "low", "high"),
    [
        ("fp16", 0.4999, 0.5001),  # 1/2
        ("bf16", 0.4999, 0.5001),
        ("int8", 0.2525, 0.2528),  # 1/4 + 1/384 for the scales
        ("int4", 0.1275, 0.1278),  # 1/8 + 1/384
        ("topk:0.1", 0.1484, 0.1487),  # 38/384 * 6/4
    ],
)
def test_padded_ratios_to_fp32(cut: tuple[torch.Tensor, torch.Tensor], spec: str, low: float, high: float) -> None:
    x, mask = cut
    ratio = wire_size(x, mask, spec, unpad=False) / wire_size(x, mask, "fp32", unpad=False)
    assert low <= ratio <= high


@pytest.mark.parametrize(
    ("spec", "low", "high"),
    [("fp32", 5.32, 5.34), ("fp16", 10.6, 10.7), ("int8", 21.0, 21.2), ("int4", 41.4, 41.8)],
)
def test_unpadding_divides_the_padded_fp32_size(
    cut: tuple[torch.Tensor, torch.Tensor], spec: str, low: float, high: float
) -> None:
    x, _ = cut
    for left in (False, True):
        mask = mask_from_lengths(LENGTHS, T, left)
        factor = wire_size(x, mask, "fp32", unpad=False) / wire_size(x, mask, spec, unpad=True)
        assert low <= factor <= high  # 2048 / 384 = 5.33 rows fewer, times the codec's own ratio


def test_adapter_update_header_does_not_grow_per_part_with_many_tensors() -> None:
    state = {f"encoder.layer.{i}.attention.query.lora_{ab}.weight": torch.randn(8, 8) for i in range(24) for ab in "AB"}
    data = 48 * 64
    names = sum(len(name) for name in state)
    fp32 = len(encode_tensors(*encode_update(state, parse_update_codec("fp32"))))
    int8 = len(encode_tensors(*encode_update(state, parse_update_codec("int8"))))
    assert 4 * data + names <= fp32 <= 4 * data + names + 48 * 12 + HEADER  # names and shapes once, as JSON
    assert data + 4 * 48 + names <= int8 <= data + 4 * 48 + names + 48 * 12 + HEADER
