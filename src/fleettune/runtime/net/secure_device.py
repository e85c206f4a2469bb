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
    """Answers the server's phase messages; one protocol instance per group of keys this device belongs to."""

    def __init__(self, device_id: str) -> None:
        self.id = device_id
        self.rounds: dict[int, SecureRound] = {}
        self.clients: dict[int, SecAggClient] = {}
        self.clipped = 0  # values of the last masked input outside the encoding's range

    def answer(
        self, phase: str, group: int, payload: bytes, detail: str, values: AdapterState, base: AdapterState
    ) -> bytes:
        """This device's message for `phase` of `group` (`values`: what it holds now; `base`: the global adapter it
        was last sent, which updates are measured from), or b"" when the server's message is unusable (the server
        then counts this device out of the aggregation)."""
        try:
            return self._answer(phase, group, payload, detail, values, base)
        except (SecAggError, InputError, ValueError) as exc:
            log.warning("device %s: secure aggregation %s (group %d) refused: %s", self.id, phase, group, exc)
            self.rounds.pop(group, None)
            self.clients.pop(group, None)
            return b""

    def _answer(
        self, phase: str, group: int, payload: bytes, detail: str, values: AdapterState, base: AdapterState
    ) -> bytes:
        if phase == ADVERTISE:
            setup = SecureRound.from_json(detail)
            if setup.group != group:
                raise InputError(f"setup of group {setup.group} sent as group {group}")
            self.rounds[group] = setup
            self.clients[group] = SecAggClient(self.id, setup.config(), SystemRandom())
            return self.clients[group].advertise().to_bytes()
        if group not in self.rounds or group not in self.clients:
            raise InputError(f"phase {phase} of aggregation group {group}, which this device was not set up for")
        setup, client = self.rounds[group], self.clients[group]
        if phase == SHARE_KEYS:
            return client.share_keys(Roster.from_bytes(payload)).to_bytes()
        if phase == MASKED_INPUT:
            # Clipping (DP) bounds the device's whole update; each group then takes its own keys.
            held = {key: values[key].double() - base[key].double() for key in values} if setup.updates else values
            vector = setup.vector(contribution(held, setup.scale, setup.clip))
            masked = client.mask_input(ShareBundle.from_bytes(payload), vector)
            self.clipped = client.clipped
            return masked.to_bytes()
        if phase == UNMASK:
            response = client.unmask(UnmaskRequest.from_bytes(payload))
            del self.rounds[group], self.clients[group]
            return response.to_bytes()
        raise InputError(f"unknown secure-aggregation phase {phase!r}; expected one of {', '.join(ROUNDS)}")
