"""The deployment's message kinds and the instructions a server gives a device, as transport fields."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from fleettune.errors import InputError

# Requests a device makes (the transport message kind).
JOIN = "join"  # reply: the assignment (fields) and the device's current adapter part (payload)
POLL = "poll"  # reply: the next instruction (long poll)
ACTIVATIONS = "activations"  # payload: encoded cut activations; reply: encoded cut gradients
ADAPTER = "adapter"  # payload: the device's client-side adapter (through its update link); reply: ack
SECAGG = "secagg"  # payload: the device's secure-aggregation message of a phase (fields: round, phase); reply: ack
# Replies the server gives.
ASSIGNMENT = "assignment"
INSTRUCTION = "instruction"
GRADIENTS = "gradients"
ACK = "ack"


class Do(str, enum.Enum):
    """What a device is told to do next."""

    WAIT = "wait"  # nothing yet: poll again
    FORWARD = "forward"  # run a training step on the next batch (split schemes)
    TRAIN = "train"  # train locally for `steps` optimizer steps (fl)
    UPLOAD = "upload"  # send the client-side adapter for aggregation
    LOAD = "load"  # take the adapter in the payload (the new global part)
    FOLD = "fold"  # fold the stacked adapter in the payload into the base weights, go on from a fresh one (flora)
    REBASE = "rebase"  # fold the base-weight updates in the payload, then take its adapter afresh (flora)
    SECAGG = "secagg"  # answer the secure-aggregation message in the payload (`phase`; `detail`: the public setup)
    DONE = "done"  # training is over: exit


@dataclass(frozen=True)
class Instruction:
    do: Do
    round: int = -1
    step: int = -1  # the run's optimizer step counter (the cut messages' step)
    lr_factor: float = 1.0
    payload: bytes = b""
    steps: int = 0  # local optimizer steps (TRAIN)
    rounds: int = 0  # the run's rounds: the local learning-rate schedule's length (TRAIN)
    phase: str = ""  # the secure-aggregation phase to answer (SECAGG)
    group: int = 0  # SECAGG: the protocol instance (group of keys) the phase belongs to
    detail: str = ""  # SECAGG's advertise phase: the aggregation's public parameters (JSON)
    stacked_rank: int = 0  # FOLD: the rank of the stacked adapter
    version: int = 0  # FOLD: the aggregation the stacked adapter came from (it seeds the fresh adapter)

    def fields(self) -> dict[str, str]:
        # repr of a float round-trips exactly: the device's learning rate equals the server's
        fields = {
            "do": self.do.value,
            "round": str(self.round),
            "step": str(self.step),
            "lr_factor": repr(self.lr_factor),
            "steps": str(self.steps),
            "rounds": str(self.rounds),
        }
        if self.phase:
            fields.update(phase=self.phase, group=str(self.group), detail=self.detail)
        if self.do is Do.FOLD:
            fields.update(stacked_rank=str(self.stacked_rank), version=str(self.version))
        return fields

    @classmethod
    def parse(cls, fields: Mapping[str, str], payload: bytes) -> Instruction:
        try:
            instruction = cls(
                Do(fields["do"]),
                int(fields["round"]),
                int(fields["step"]),
                float(fields["lr_factor"]),
                payload,
                int(fields.get("steps", "0")),
                int(fields.get("rounds", "0")),
                fields.get("phase", ""),
                int(fields.get("group", "0")),
                fields.get("detail", ""),
                int(fields.get("stacked_rank", "0")),
                int(fields.get("version", "0")),
            )
        except (KeyError, ValueError) as exc:
            raise InputError(f"malformed instruction from the server ({exc}); got fields {dict(fields)}") from None
        if instruction.do is Do.FOLD and instruction.stacked_rank < 1:
            raise InputError(f"malformed fold instruction: stacked_rank must be >= 1, got {instruction.stacked_rank}")
        return instruction


def int_field(fields: Mapping[str, str], name: str) -> int:
    """An integer field of a device's request; a missing or malformed one is the device's input error."""
    value = fields.get(name, "")
    if not value.lstrip("-").isdigit():
        raise InputError(f"request field {name!r} must be an integer, got {value!r}")
    return int(value)
