"""Codecs for the tensors that cross the network: cut activations and gradients, and adapter updates.

Specs: fp32 (lossless), fp16, bf16, int8, int4 (symmetric absmax, one float32 scale per row) and topk:FRACTION.
Cut tensors may also be unpadded (only real tokens travel); adapter traffic goes through an UpdateLink, which
sends updates with error feedback when its codec is lossy.
"""

from fleettune.compression.base import Codec, PartSpec
from fleettune.compression.cut import decode_cut, decode_cut_with_mask, encode_cut, encode_cut_with_mask
from fleettune.compression.link import UpdateLink, receive_state, send_state
from fleettune.compression.quantize import CastCodec, IntCodec
from fleettune.compression.sparsify import TopKCodec
from fleettune.compression.specs import CODECS, CodecKind, parse_cut_codec, parse_update_codec
from fleettune.compression.updates import AdapterState, decode_update, encode_update

__all__ = [
    "CODECS",
    "AdapterState",
    "CastCodec",
    "Codec",
    "CodecKind",
    "IntCodec",
    "PartSpec",
    "TopKCodec",
    "UpdateLink",
    "decode_cut",
    "decode_cut_with_mask",
    "decode_update",
    "encode_cut",
    "encode_cut_with_mask",
    "encode_update",
    "parse_cut_codec",
    "parse_update_codec",
    "receive_state",
    "send_state",
]
