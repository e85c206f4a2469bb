"""Spec parsing: every family and its canonical spec, and one-line ConfigErrors that name the key and the spec."""

from __future__ import annotations

import pytest

from fleettune.compression import parse_cut_codec, parse_update_codec
from fleettune.errors import ConfigError

EXPECTED = "expected bf16, fp16, fp32, int4, int8, topk:FRACTION"


@pytest.mark.parametrize(
    ("spec", "canonical", "lossless"),
    [
        ("fp32", "fp32", True),
        ("fp16", "fp16", False),
        ("bf16", "bf16", False),
        ("int8", "int8", False),
        ("int4", "int4", False),
        ("topk:0.1", "topk:0.1", False),
        (" topk:.25 ", "topk:0.25", False),
        ("topk:1", "topk:1.0", True),
    ],
)
def test_specs_parse_to_codecs_whose_spec_parses_back(spec: str, canonical: str, lossless: bool) -> None:
    codec = parse_cut_codec(spec)
    assert codec.spec == canonical
    assert codec.lossless is lossless
    assert parse_update_codec(codec.spec) == codec


def test_unknown_codec_message_names_key_spec_and_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        parse_cut_codec("int9", key="compression.activations")
    assert str(info.value) == f"compression.activations: unknown codec 'int9'; {EXPECTED}"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("topk:0", "FRACTION must be a number in (0, 1]"),
        ("topk:abc", "FRACTION must be a number in (0, 1]"),
        ("topk:1.5", "FRACTION must be a number in (0, 1]"),
        ("topk:-0.1", "FRACTION must be a number in (0, 1]"),
        ("topk:nan", "FRACTION must be a number in (0, 1]"),
        ("topk:", "FRACTION must be a number in (0, 1]"),
        ("topk", "topk needs FRACTION"),
        ("int8:2", "int8 takes no argument"),
    ],
)
def test_bad_arguments_are_config_errors_with_the_reason(spec: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_update_codec(spec, key="compression.updates")
    message = str(info.value)
    assert message == f"compression.updates: bad codec {spec!r} ({reason}); {EXPECTED}"
    assert "\n" not in message


@pytest.mark.parametrize("spec", ["", "INT8", "fp64", ":0.1", "int 8"])
def test_other_unknown_names_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"^compression.gradients: unknown codec"):
        parse_cut_codec(spec, key="compression.gradients")
