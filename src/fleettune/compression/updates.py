"""Encoding of adapter states and updates (named float32 tensors) for aggregation traffic.

Each tensor is one row for the codec (int8/int4 keep one scale per tensor, top-k keeps round(FRACTION * numel)
entries per tensor). The parts of all tensors are concatenated into one flat tensor per part name, so the payload
header grows with the number of part kinds, not with the number of adapter tensors; names and shapes travel once,
as JSON in the metadata.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import torch

from fleettune.compression.base import Codec, PartSpec, check_parts
from fleettune.compression.specs import codec_in_payload
from fleettune.errors import InputError

AdapterState = dict[str, torch.Tensor]
Entry = tuple[str, tuple[int, ...]]


def encode_update(
    state: Mapping[str, torch.Tensor], codec: Codec, *, prefix: str = "update"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Named tensors and string metadata for `state`; keys start with `prefix` + "." like those of encode_cut.

    Metadata: `<prefix>.codec` (the codec spec) and `<prefix>.tensors` (JSON list of [name, shape] in order).
    """
    entries: list[Entry] = []
    encoded: list[dict[str, torch.Tensor]] = []
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            raise ValueError(f"adapter tensor {name!r} is {tensor.dtype}, not floating point")
        entries.append((name, tuple(tensor.shape)))
        encoded.append(codec.encode(tensor.detach().to(torch.float32).reshape(1, tensor.numel())))
    tensors = {
        f"{prefix}.{part}": torch.cat([parts[part].reshape(-1).to(spec.dtype) for parts in encoded])
        for part, spec in _joined_layout(codec, entries).items()
    }
    metadata = {f"{prefix}.codec": codec.spec, f"{prefix}.tensors": json.dumps(entries, separators=(",", ":"))}
    return tensors, metadata


def decode_update(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], *, prefix: str = "update"
) -> AdapterState:
    """The float32 state from encode_update's output; InputError when parts or metadata are malformed."""
    what = f"{prefix} payload"
    codec = codec_in_payload(metadata.get(f"{prefix}.codec"), what)
    entries = _entries(metadata.get(f"{prefix}.tensors"), what)
    layout = _joined_layout(codec, entries)
    joined = {part: tensors[f"{prefix}.{part}"] for part in layout if f"{prefix}.{part}" in tensors}
    check_parts(joined, layout, what)
    offsets = dict.fromkeys(joined, 0)
    state: AdapterState = {}
    for name, shape in entries:
        numel = math.prod(shape)
        parts = {}
        for part, spec in codec.layout((1, numel)).items():
            size = math.prod(spec.shape)
            parts[part] = joined[part][offsets[part] : offsets[part] + size].to(spec.dtype).reshape(spec.shape)
            offsets[part] += size
        state[name] = codec.decode(parts, (1, numel)).reshape(shape)
    return state


def _joined_layout(codec: Codec, entries: Sequence[Entry]) -> dict[str, PartSpec]:
    """One flat part per part name: the sizes add up, the dtype is the widest the tensors use (indices vary)."""
    joined: dict[str, PartSpec] = {}
    for _, shape in entries:
        for part, spec in codec.layout((1, math.prod(shape))).items():
            size, dtype = math.prod(spec.shape), spec.dtype
            if part in joined:
                size += joined[part].shape[0]
                dtype = torch.promote_types(dtype, joined[part].dtype)
            joined[part] = PartSpec((size,), dtype)
    return joined


def _entries(text: str | None, what: str) -> list[Entry]:
    try:
        raw = json.loads(text or "")
    except ValueError:
        raw = None
    entries: list[Entry] = []
    if isinstance(raw, list):
        for item in raw:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                break
            name, shape = item
            if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
                break
            entries.append((name, tuple(shape)))
        else:
            if len({name for name, _ in entries}) == len(entries):
                return entries
    raise InputError(f"{what}: tensors metadata must be a JSON list of distinct [name, [sizes]], got {text!r}")
