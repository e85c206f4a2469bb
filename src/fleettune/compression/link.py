"""One direction of adapter traffic between two parties that both remember the state last delivered.

A lossless codec sends the state itself. A lossy one sends the update (the state minus `reference`,
what the receiver holds), and the receiver adds the decoded update to its reference; both ends then
agree on the new reference, so the sender knows exactly what the receiver has.

Error feedback: while the reference is the receiver's last delivered state, whatever a lossy send
left out is still in the next update (it is measured from what was delivered). When the reference
is moved instead (`rebase`: a client receives the new global adapter and will next send its own
training update from there), the part left out would be lost, so it is carried into the next send.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fleettune.codec import decode_tensors, encode_tensors
from fleettune.compression.base import Codec
from fleettune.compression.updates import AdapterState, decode_update, encode_update
from fleettune.errors import InputError

PREFIX = "update"
STATE, UPDATE = "adapter", "adapter-update"


def _copy(state: Mapping[str, torch.Tensor]) -> AdapterState:
    return {k: v.detach().clone() for k, v in state.items()}


def send_state(codec: Codec, state: Mapping[str, torch.Tensor]) -> bytes:
    """A state sent as itself (exact with a lossless codec): for what the receiver holds nothing like."""
    tensors, meta = encode_update(state, codec, prefix=PREFIX)
    return encode_tensors(tensors, {**meta, "kind": STATE})


def receive_state(payload: bytes) -> AdapterState:
    """The state of a `send_state` payload."""
    tensors, meta = decode_tensors(payload)
    if meta.get("kind") != STATE:
        raise InputError(f"expected an adapter state payload, got metadata kind {meta.get('kind')!r}")
    return decode_update(tensors, meta, prefix=PREFIX)


class UpdateLink:
    """Encode at the sender, decode at the receiver; `reference` is the state the receiver holds."""

    def __init__(self, codec: Codec, reference: Mapping[str, torch.Tensor]) -> None:
        self.codec = codec
        self.reference = _copy(reference)
        self._unsent: dict[str, torch.Tensor] = {}  # float64: what the last send left out
        self._carry: dict[str, torch.Tensor] = {}  # float64: added to the next send (after a rebase)

    @property
    def pending(self) -> dict[str, torch.Tensor]:
        """What the next send adds on top of its update (float64; empty unless a rebase carried a residual)."""
        return dict(self._carry)

    def send(self, state: Mapping[str, torch.Tensor]) -> bytes:
        """The payload that brings the receiver to `state` (approximately, for a lossy codec)."""
        if self.codec.lossless:
            return send_state(self.codec, state)
        missing = sorted(set(self.reference) ^ set(state))[:3]
        if missing:
            raise ValueError(f"state and reference hold different tensors: {missing}")
        update = {
            k: v.detach().to(torch.float64) - self.reference[k].to(torch.float64) + self._carry.get(k, 0.0)
            for k, v in state.items()
        }
        tensors, meta = encode_update({k: v.to(torch.float32) for k, v in update.items()}, self.codec, prefix=PREFIX)
        sent = decode_update(tensors, meta, prefix=PREFIX)
        self._unsent = {k: v - sent[k].to(torch.float64) for k, v in update.items()}
        self._carry = {}
        return encode_tensors(tensors, {**meta, "kind": UPDATE})

    def receive(self, payload: bytes) -> AdapterState:
        """The receiver's new state from `payload`; it becomes the reference."""
        tensors, meta = decode_tensors(payload)
        if meta.get("kind") not in (STATE, UPDATE):
            raise InputError(f"expected an adapter payload, got metadata kind {meta.get('kind')!r}")
        decoded = decode_update(tensors, meta, prefix=PREFIX)
        if set(decoded) != set(self.reference):
            unexpected = sorted(set(decoded) ^ set(self.reference))[:3]
            raise InputError(f"adapter payload does not match the receiver's adapter (keys differ: {unexpected})")
        if meta["kind"] == UPDATE:
            ref = self.reference
            decoded = {k: (ref[k].to(torch.float32) + v).to(ref[k].dtype) for k, v in decoded.items()}
        self.reference = _copy(decoded)
        return decoded

    def rebase(self, state: Mapping[str, torch.Tensor]) -> None:
        """Both ends now hold `state` (delivered the other way); the last send's left-out part carries over."""
        self.reference = _copy(state)
        self._carry, self._unsent = self._unsent, {}

    def reset(self, state: Mapping[str, torch.Tensor]) -> None:
        """Both ends now hold `state`, and nothing earlier carries over (the adapter was replaced)."""
        self.reference = _copy(state)
        self._carry, self._unsent = {}, {}
