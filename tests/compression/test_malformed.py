"""Malformed encoded input: every missing or inconsistent part or metadata entry is a one-line InputError."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fleettune.compression import decode_cut, decode_update, encode_cut, encode_update, parse_cut_codec
from fleettune.errors import ConfigError, InputError
from tests.compression.strategies import mask_from_lengths

Parts = dict[str, torch.Tensor]
Meta = dict[str, str]


def cut_payload(spec: str, unpad: bool) -> tuple[Parts, Meta]:
    x = torch.randn(2, 20, 8)
    return encode_cut(x, mask_from_lengths([20, 3], 20, left=True), parse_cut_codec(spec), unpad)


def assert_input_error(call: Callable[[], object], match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        call()
    assert not isinstance(info.value, ConfigError)  # wire data is not configuration
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("spec", "unpad", "edit", "match"),
    [
        ("int8", False, lambda t, m: t.pop("cut.scale"), "missing part 'scale'"),
        ("int8", False, lambda t, m: t.update({"cut.q": t["cut.q"].to(torch.int16)}), "part 'q' is torch.int16"),
        ("int4", False, lambda t, m: t.update({"cut.q": t["cut.q"][:-1]}), r"expected torch.uint8 \(160,\)"),
        ("fp32", False, lambda t, m: m.update({"cut.shape": "2,20"}), "expected 3 comma-separated sizes"),
        ("fp32", False, lambda t, m: m.update({"cut.shape": "2,x,8"}), "expected 3 comma-separated sizes"),
        ("fp32", False, lambda t, m: m.update({"cut.shape": "2,10,8"}), r"expected torch.float32 \(20, 8\)"),
        ("fp32", False, lambda t, m: m.pop("cut.shape"), "got None"),
        ("fp32", False, lambda t, m: m.update({"cut.codec": "int9"}), "unknown codec 'int9'"),
        ("fp32", False, lambda t, m: m.update({"cut.codec": "topk:0"}), "bad codec 'topk:0'"),
        ("fp32", False, lambda t, m: m.pop("cut.codec"), "names no codec"),
        ("fp32", False, lambda t, m: m.update({"cut.rows": "some"}), "rows must be"),
        ("fp32", True, lambda t, m: t.pop("cut.spans"), "missing part 'mask_bits'"),
        ("fp32", True, lambda t, m: t["cut.spans"].fill_(15), "spans reach outside"),
        ("fp32", True, lambda t, m: t["cut.spans"].copy_(torch.tensor([[0, 20], [0, 4]])), r"\(24, 8\)"),
        ("topk:0.5", False, lambda t, m: t["cut.indices"].fill_(9), r"indices outside 0..7"),
    ],
)
def test_malformed_cut_payloads(spec: str, unpad: bool, edit: Callable[[Parts, Meta], object], match: str) -> None:
    tensors, metadata = cut_payload(spec, unpad)
    edit(tensors, metadata)
    assert_input_error(lambda: decode_cut(tensors, metadata), match)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t, m: t.pop("update.scale"), "missing part 'scale'"),
        (lambda t, m: t.update({"update.q": t["update.q"][1:]}), r"expected torch.int8 \(15,\)"),
        (lambda t, m: m.update({"update.tensors": "not json"}), "JSON list"),
        (lambda t, m: m.update({"update.tensors": '[["a",[3]],["a",[12]]]'}), "distinct"),
        (lambda t, m: m.update({"update.tensors": '[["a",[-3]]]'}), "JSON list"),
        (lambda t, m: m.update({"update.tensors": '{"a":[3]}'}), "JSON list"),
        (lambda t, m: m.update({"update.codec": "fp8"}), "unknown codec 'fp8'"),
    ],
)
def test_malformed_update_payloads(edit: Callable[[Parts, Meta], object], match: str) -> None:
    tensors, metadata = encode_update({"a": torch.randn(3), "b": torch.randn(3, 4)}, parse_cut_codec("int8"))
    edit(tensors, metadata)
    assert_input_error(lambda: decode_update(tensors, metadata), match)
