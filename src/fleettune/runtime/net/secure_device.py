"""A device's side of deployed secure aggregation: fresh keys and secrets for every aggregation, drawn from the
operating system; the device's adapter (or update) leaves it only masked."""

from __future__ import annotations

import logging

from fleettune.aggregation.secure import contribution
from fleettune.errors import InputError
from fleettune.models.adapters import AdapterState
from fleettune.privacy.secagg import (
    ROUNDS,
    Roster,
    SecAggClient,
    SecAggError,
    ShareBundle,
    SystemRandom,
    UnmaskRequest,
)
from fleettune.runtime.net.secure_round import SecureRound

log = logging.getLogger("fleettune.net")

ADVERTISE, SHARE_KEYS, MASKED_INPUT, UNMASK = ROUNDS  # the phases, in the order the server asks for them


class SecureParty:
    """Answers the server's phase messages of one aggregation at a time."""

    def __init__(self, device_id: str) -> None:
        self.id = device_id
        self.round: SecureRound | None = None
        self.client: SecAggClient | None = None
        self.clipped = 0  # values of the last masked input outside the encoding's range

    def answer(self, phase: str, payload: bytes, detail: str, values: AdapterState, base: AdapterState) -> bytes:
        """This device's message for `phase` (`values`: what it holds now; `base`: the global adapter it was last
        sent, which updates are measured from), or b"" when the server's message is unusable (the server then
        counts this device out of the aggregation)."""
        try:
            return self._answer(phase, payload, detail, values, base)
        except (SecAggError, InputError, ValueError) as exc:
            log.warning("device %s: secure aggregation %s refused: %s", self.id, phase, exc)
            self.round, self.client = None, None
            return b""

    def _answer(self, phase: str, payload: bytes, detail: str, values: AdapterState, base: AdapterState) -> bytes:
        if phase == ADVERTISE:
            self.round = SecureRound.from_json(detail)
            self.client = SecAggClient(self.id, self.round.config(), SystemRandom())
            return self.client.advertise().to_bytes()
        if self.round is None or self.client is None:
            raise InputError(f"phase {phase} of an aggregation this device was not set up for")
        if phase == SHARE_KEYS:
            return self.client.share_keys(Roster.from_bytes(payload)).to_bytes()
        if phase == MASKED_INPUT:
            held = {key: values[key].double() - base[key].double() for key in values} if self.round.updates else values
            vector = self.round.vector(contribution(held, self.round.scale, self.round.clip))
            masked = self.client.mask_input(ShareBundle.from_bytes(payload), vector)
            self.clipped = self.client.clipped
            return masked.to_bytes()
        if phase == UNMASK:
            response = self.client.unmask(UnmaskRequest.from_bytes(payload))
            self.round, self.client = None, None
            return response.to_bytes()
        raise InputError(f"unknown secure-aggregation phase {phase!r}; expected one of {', '.join(ROUNDS)}")
