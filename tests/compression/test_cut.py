"""Cut tensors through the wire: exact lossless paths, unpadding with any padding style, bounds for lossy codecs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fleettune.codec import decode_tensors, encode_tensors
from fleettune.compression import decode_cut, encode_cut, parse_cut_codec
from tests.compression.strategies import cut_cases, mask_from_lengths

SPECS = ["fp32", "fp16", "bf16", "int8", "int4", "topk:0.3", "topk:1"]


def through_wire(x: torch.Tensor, mask: torch.Tensor | None, spec: str, unpad: bool) -> torch.Tensor:
    tensors, metadata = encode_cut(x, mask, parse_cut_codec(spec), unpad)
    payload = encode_tensors(tensors, metadata)
    back = decode_cut(*decode_tensors(payload))
    assert back.dtype == torch.float32 and back.shape == x.shape
    return back


@pytest.mark.parametrize("spec", ["fp32", "topk:1"])
@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("unpad", [False, True])
def test_lossless_codecs_round_trip_exactly(spec: str, left: bool, unpad: bool) -> None:
    x = torch.randn(4, 9, 16, generator=torch.Generator().manual_seed(1))
    mask = mask_from_lengths([9, 1, 5, 0], 9, left)  # full, single real token, half, empty
    expected = x * mask[..., None] if unpad else x
    assert torch.equal(through_wire(x, mask, spec, unpad), expected)


def test_unpadding_sends_only_real_rows_and_spans_for_contiguous_padding() -> None:
    x = torch.randn(3, 20, 4)
    for left in (False, True):
        mask = mask_from_lengths([20, 1, 3], 20, left)
        tensors, metadata = encode_cut(x, mask, parse_cut_codec("fp32"), unpad=True)
        assert tensors["cut.values"].shape == (24, 4)
        assert metadata == {"cut.codec": "fp32", "cut.shape": "3,20,4", "cut.rows": "real"}
        starts = [0, 19, 17] if left else [0, 0, 0]
        assert tensors["cut.spans"].tolist() == [[s, n] for s, n in zip(starts, [20, 1, 3], strict=True)]
        assert tensors["cut.spans"].dtype == torch.uint8


def test_position_form_is_the_smaller_one_and_bits_cover_scattered_masks() -> None:
    codec = parse_cut_codec("fp32")
    long = torch.zeros(2, 300, 1)
    tensors, _ = encode_cut(long, mask_from_lengths([300, 7], 300, left=False), codec, unpad=True)
    assert tensors["cut.spans"].dtype == torch.int16  # T = 300 does not fit uint8
    short = torch.zeros(2, 3, 1)
    tensors, _ = encode_cut(short, mask_from_lengths([3, 1], 3, left=False), codec, unpad=True)
    assert tensors["cut.mask_bits"].shape == (1,)  # 6 bits in one byte beat 4 bytes of spans
    scattered = torch.tensor([[1, 0, 1, 1, 0, 0, 0, 1, 1]])
    tensors, _ = encode_cut(torch.randn(1, 9, 2), scattered, codec, unpad=True)
    assert "cut.spans" not in tensors
    assert tensors["cut.mask_bits"].tolist() == [0b10110001, 0b10000000]


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.float32])
def test_any_mask_dtype_of_zeros_and_ones_works(mask_dtype: torch.dtype) -> None:
    x = torch.randn(2, 4, 3)
    mask = mask_from_lengths([2, 4], 4, left=True).to(mask_dtype)
    assert torch.equal(through_wire(x, mask, "fp32", unpad=True), x * mask[..., None].float())


def test_prefix_keeps_keys_apart_from_other_message_tensors() -> None:
    x = torch.randn(1, 2, 3)
    tensors, metadata = encode_cut(x, None, parse_cut_codec("int8"), unpad=False, prefix="grad")
    assert set(tensors) == {"grad.q", "grad.scale"} and set(metadata) == {"grad.codec", "grad.shape", "grad.rows"}
    tensors["attention_mask"] = torch.ones(1, 2)
    assert decode_cut(tensors, metadata, prefix="grad").shape == (1, 2, 3)


@given(cut_cases(), st.booleans())
def test_lossless_paths_are_exact_for_any_shape_and_mask(case: tuple[torch.Tensor, torch.Tensor], unpad: bool) -> None:
    x, mask = case
    expected = x * mask[..., None] if unpad else x
    assert torch.equal(through_wire(x, mask, "fp32", unpad), expected)
    assert torch.equal(through_wire(x, mask, "topk:1", unpad), expected)


@given(cut_cases(), st.booleans(), st.sampled_from(["int8", "int4"]))
def test_quantized_paths_keep_per_token_bounds_and_zero_padding(
    case: tuple[torch.Tensor, torch.Tensor], unpad: bool, spec: str
) -> None:
    x, mask = case
    levels = 127 if spec == "int8" else 7
    back = through_wire(x, mask, spec, unpad)
    bound = x.abs().amax(dim=2, keepdim=True) / (2 * levels) * (1 + 1e-4)
    real = mask.bool() if unpad else torch.ones_like(mask, dtype=torch.bool)
    assert torch.all((back - x).abs()[real] <= bound.expand_as(x)[real])
    assert torch.all(back[~real] == 0)


@given(cut_cases(), st.sampled_from(SPECS))
def test_every_codec_zeroes_padding_when_unpadded(case: tuple[torch.Tensor, torch.Tensor], spec: str) -> None:
    x, mask = case
    back = through_wire(x, mask, spec, unpad=True)
    assert torch.all(back[~mask.bool()] == 0)


def test_encoding_rejects_programming_mistakes() -> None:
    codec = parse_cut_codec("fp32")
    with pytest.raises(ValueError, match="needs its attention mask"):
        encode_cut(torch.zeros(1, 2, 3), None, codec, unpad=True)
    with pytest.raises(ValueError, match="only 0 and 1"):
        encode_cut(torch.zeros(1, 2, 3), torch.tensor([[1, 2]]), codec, unpad=True)
    with pytest.raises(ValueError, match=r"must be \(1, 2\)"):
        encode_cut(torch.zeros(1, 2, 3), torch.ones(2, 1), codec, unpad=True)
    with pytest.raises(ValueError, match="floating"):
        encode_cut(torch.zeros(2, 3), None, codec, unpad=False)
