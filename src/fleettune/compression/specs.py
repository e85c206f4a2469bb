"""The codec registry and the parsing of spec strings such as "int8" or "topk:0.1" from the configuration."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fleettune.compression.base import Codec
from fleettune.compression.quantize import CastCodec, IntCodec
from fleettune.compression.sparsify import TopKCodec
from fleettune.errors import ConfigError, InputError
from fleettune.registry import Registry


@dataclass(frozen=True)
class CodecKind:
    """One codec family: its usage as shown in error messages, and a factory taking the text after the colon.

    `argument` names the one argument the family needs (None when it takes none); the factory raises
    ValueError with a short reason when the argument is out of range.
    """

    build: Callable[[str | None], Codec]
    argument: str | None = None


CODECS: Registry[CodecKind] = Registry("codec")


def _fraction(text: str | None) -> Codec:
    try:
        fraction = float(text or "")
    except ValueError:
        fraction = math.nan
    if not 0.0 < fraction <= 1.0:
        raise ValueError("FRACTION must be a number in (0, 1]")
    return TopKCodec(fraction)


CODECS.add("fp32", CodecKind(lambda _: CastCodec("fp32", torch.float32)))
CODECS.add("fp16", CodecKind(lambda _: CastCodec("fp16", torch.float16)))
CODECS.add("bf16", CodecKind(lambda _: CastCodec("bf16", torch.bfloat16)))
CODECS.add("int8", CodecKind(lambda _: IntCodec("int8", 8)))
CODECS.add("int4", CodecKind(lambda _: IntCodec("int4", 4)))
CODECS.add("topk", CodecKind(_fraction, argument="FRACTION"))


def expected_specs() -> str:
    """The accepted spec forms, for error messages: "bf16, fp16, ..., topk:FRACTION"."""
    forms = []
    for name in CODECS:
        argument = CODECS.get(name).argument
        forms.append(f"{name}:{argument}" if argument else name)
    return ", ".join(forms)


def parse_cut_codec(spec: str, key: str = "compression.activations") -> Codec:
    """The codec named by `spec` for cut tensors; a bad spec is a ConfigError naming `key`."""
    return _parse(spec, key)


def parse_update_codec(spec: str, key: str = "compression.updates") -> Codec:
    """The codec named by `spec` for adapter updates (the same families; each tensor is one row)."""
    return _parse(spec, key)


def codec_in_payload(spec: str | None, what: str) -> Codec:
    """The codec a received payload names; a missing or unknown one is malformed input, not a config error."""
    if spec is None:
        raise InputError(f"{what}: metadata names no codec")
    try:
        return _parse(spec, what)
    except ConfigError as exc:
        raise InputError(str(exc)) from None


def _parse(spec: str, key: str) -> Codec:
    text = spec.strip() if isinstance(spec, str) else ""
    name, colon, argument = text.partition(":")
    if name not in CODECS:
        raise ConfigError(f"{key}: unknown codec {spec!r}; expected {expected_specs()}")
    kind = CODECS.get(name)
    if kind.argument and not colon:
        reason = f"{name} needs {kind.argument}"
    elif not kind.argument and colon:
        reason = f"{name} takes no argument"
    else:
        try:
            return kind.build(argument.strip() if colon else None)
        except ValueError as exc:
            reason = str(exc)
    raise ConfigError(f"{key}: bad codec {spec!r} ({reason}); expected {expected_specs()}")
