"""The edge server of `mesfl` and `splitfed` in deployment: the simulation's server role, links, codecs,
aggregation and scheduling policy, driven by devices' real messages and the wall clock.

Round structure (as in simulation): the devices present take `local_steps` steps in parallel, the
server serving their activations one at a time in its policy's order; every `aggregate_every` rounds
they upload their client-side adapters, which are joined with the server-side ones, combined and sent
back split at each device's cut. A device that misses a deadline, disconnects or rejoins is dropped
from the round: the server puts its side back as it was at the round's start, and the device must join
again, which hands it the current global adapter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fleettune.aggregation.ranks import Aggregate
from fleettune.compression import UpdateLink, parse_update_codec, send_state
from fleettune.draws import global_rng_kept
from fleettune.errors import ConfigError, InputError
from fleettune.models.adapters import AdapterState, split_adapter
from fleettune.runner import PreparedRun
from fleettune.runtime.ledger import SETUP, EnergyLedger, TrafficLedger
from fleettune.runtime.memory import MemoryBreakdown
from fleettune.runtime.net.assignment import Assignment
from fleettune.runtime.net.base_fold import with_base
from fleettune.runtime.net.board import Board, Member
from fleettune.runtime.net.protocol import (
    ACK,
    ACTIVATIONS,
    ASSIGNMENT,
    GRADIENTS,
    INSTRUCTION,
    JOIN,
    POLL,
    SECAGG,
    int_field,
)
from fleettune.runtime.net.protocol import (
    ADAPTER as ADAPTER_KIND,
)
from fleettune.runtime.net.transport.message import Message
from fleettune.runtime.progress import RoundRecord
from fleettune.runtime.sim.participation import ParticipationTotals
from fleettune.schemes.base import RunSetup
from fleettune.schemes.evaluator import EvalResult
from fleettune.schemes.split.engine import initial_state
from fleettune.schemes.split.parallel import server_copies, shared_server
from fleettune.schemes.split.sequential import shared_adapter
from fleettune.schemes.split.servers import ServerRole
from fleettune.security.attacks import UPDATE_ATTACKS

log = logging.getLogger("fleettune.net")

# The server role of each deployable scheme: the simulation's own.
SERVER_ROLES: dict[str, Callable[[RunSetup], ServerRole]] = {
    "mesfl": shared_server,
    "splitfed": server_copies,
    "sl": shared_adapter,
    "cpsl": shared_adapter,
}

DEPLOYABLE = ("fl", *SERVER_ROLES)
SETUP_CODEC = "fp32"  # a joining device's adapter travels whole and exact, whatever the run's update codec


@dataclass(frozen=True)
class ServeOptions:
    poll_s: float = 5.0  # longest a poll is held before it answers WAIT
    join_timeout_s: float = 300.0  # how long training waits for the fleet to join
    min_devices: int | None = None  # start once this many devices joined (default: the whole fleet)
    step_timeout_s: float = 120.0  # a device with no activations, finished step or upload by then is dropped
    checkpoint_dir: Path | None = None


class Coordinator:
    """Holds the server-side model and adapters; `handle` answers devices, `run` drives the rounds."""

    def __init__(self, prepared: PreparedRun, options: ServeOptions | None = None) -> None:
        self.prepared, self.options = prepared, options or ServeOptions()
        setup = self.setup = prepared.setup
        scheme = prepared.config.scheme
        if scheme not in DEPLOYABLE:
            raise ConfigError(f"scheme: {scheme} cannot be deployed; expected one of {', '.join(DEPLOYABLE)}")
        if prepared.config.privacy.secure_aggregation and prepared.config.security.attack in UPDATE_ATTACKS:
            raise ConfigError(
                f"security.attack: {prepared.config.security.attack} changes updates the server never sees under "
                "privacy.secure_aggregation in a deployment (a device would have to attack its own); expected none"
            )
        self.mix = setup.rank_mix()
        self.base_update: dict[str, torch.Tensor] = {}  # flora: the stacked updates folded so far, summed
        self.policy = setup.aggregation_policy()
        # mesfl orders waiting devices by its policy; the others' servers take them as they come
        self.scheduler = setup.scheduler if scheme == "mesfl" else "fifo"
        self.board = Board([c.device for c in setup.clients])
        with global_rng_kept():  # LoRA init, overwritten by the initial adapter, must not move the global RNG
            initial, self.evaluation = initial_state(setup)
            # fl's server holds no part of the model, only the global adapter
            self.role: ServerRole | None = SERVER_ROLES[scheme](setup) if scheme in SERVER_ROLES else None
        self.current = Aggregate(initial, {c.id: self.mix.start(initial, c.id) for c in setup.clients})
        self.version = 0
        self.codec = parse_update_codec(prepared.config.compression.updates)
        self.uplinks: dict[str, UpdateLink] = {}
        self.downlinks: dict[str, UpdateLink] = {}
        self.fresh: set[str] = set()  # joined since the driver last looked: their server side starts afresh
        self.traffic, self.energy = TrafficLedger(), EnergyLedger()
        self.history: list[RoundRecord] = []
        self.step_losses: list[float] = []
        self.server_memory = MemoryBreakdown()
        self.server_s = {c.id: 0.0 for c in setup.clients}
        self.clipped: dict[str, int] = {}  # secure aggregation: values of the current one each device clipped
        self.steps_done = 0
        self.totals = ParticipationTotals()
        self.final: EvalResult | None = None
        self.started = time.perf_counter()

    def elapsed_s(self) -> float:
        """Wall-clock seconds of training so far (across a resume)."""
        return time.perf_counter() - self.started

    def resume_from_s(self, elapsed_s: float) -> None:
        self.started = time.perf_counter() - elapsed_s

    # --- the transport handler -----------------------------------------------------------------------------
    def handle(self, identity: str, request: Message) -> Message:
        fields = dict(request.fields)
        if request.kind == JOIN:
            return self._join(identity, request.seq, fields)
        if request.kind == POLL:
            instruction = self.board.poll(identity, fields, self.options.poll_s)
            return Message(INSTRUCTION, identity, request.seq, instruction.fields(), instruction.payload)
        if request.kind == ACTIVATIONS:
            r, step = int_field(fields, "round"), int_field(fields, "step")
            grads = self.board.deliver(identity, "activations", r, step, request.payload, self.options.step_timeout_s)
            return Message(GRADIENTS, identity, request.seq, {}, grads)
        if request.kind == ADAPTER_KIND:
            self.board.deliver(identity, "adapter", int_field(fields, "round"), -1, request.payload, 0.0)
            return Message(ACK, identity, request.seq)
        if request.kind == SECAGG:
            phase = fields.get("phase", "")
            clipped = int_field(fields, "clipped") if phase == "masked_input" else 0
            kind = f"secagg-{int_field(fields, 'group')}-{phase}"
            self.board.deliver(identity, kind, int_field(fields, "round"), -1, request.payload, 0.0)
            self.clipped[identity] = self.clipped.get(identity, 0) + clipped
            return Message(ACK, identity, request.seq)
        raise InputError(
            f"unknown request kind {request.kind!r}; expected one of join, poll, activations, adapter, secagg"
        )

    def _join(self, identity: str, seq: int, fields: dict[str, str]) -> Message:
        samples = int_field(fields, "samples")
        if samples <= 0:
            raise InputError(f"device {identity}: samples must be > 0, got {samples}")
        with self.board.cv:
            m = self.board.member(identity)
            m.samples, m.joined, m.ready, m.incarnation = samples, True, False, m.incarnation + 1
            m.last_seen = self.board.clock()
            self.board.release(m)
            m.reply = None
            part = self.client_part(m)
            state = with_base(part, self.client_part(m, self.base_update)) if self.base_update else part
            payload = send_state(parse_update_codec(SETUP_CODEC), state)
            self.uplinks[m.id], self.downlinks[m.id] = UpdateLink(self.codec, part), UpdateLink(self.codec, part)
            m.synced, m.missed_base = self.version, {}
            self.fresh.add(m.id)
            self.traffic.down(m.id, payload, SETUP)
            self.board.cv.notify_all()
        log.info("device %s joined (%d samples)", identity, samples)
        return Message(ASSIGNMENT, identity, seq, {"assignment": self._assignment(m).to_json()}, payload)

    def _assignment(self, m: Member) -> Assignment:
        config, setup = self.prepared.config, self.setup
        lora = setup.lora_for(m.id)
        hw = m.device.hardware
        privacy = setup.client_privacy
        return Assignment(
            scheme=config.scheme,
            model=config.model,
            index=m.index,
            kind=hw.kind,
            tflops=hw.tflops,
            memory_gib=hw.memory_gib,
            power_w=hw.power_w,
            cut_layer=int(m.device.cut_layer),
            lora_rank=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            lora_targets=lora.targets,
            labels=tuple(self.prepared.dataset.label_names),
            numeric_labels=all(name.lstrip("-").isdigit() for name in self.prepared.dataset.label_names),
            text_column=config.text_column,
            label_column=config.label_column,
            batch_size=config.batch_size,
            max_length=config.max_length,
            pad_to_max_length=config.padding == "max_length",
            lr=config.lr,
            lr_schedule=config.lr_schedule,
            weight_decay=config.weight_decay,
            optimizer=config.optimizer,
            seed=config.seed,
            activations=config.compression.activations,
            gradients=config.compression.gradients,
            unpad=config.compression.unpad,
            updates=config.compression.updates,
            activation_clip=privacy.activation_clip if privacy else None,
            activation_noise=privacy.activation_noise if privacy else 0.0,
            dpsgd_clip=privacy.dpsgd_clip if privacy else None,
            dpsgd_noise=privacy.dpsgd_noise if privacy else 0.0,
        )

    @property
    def server(self) -> ServerRole:
        """The server's role in a split scheme."""
        assert self.role is not None, "fl has no server-side model"
        return self.role

    def client_part(self, m: Member, state: AdapterState | None = None) -> AdapterState:
        """The part of `state` (default: the adapter `m` continues from) that `m` holds: all of it in fl,
        the layers below its cut in a split scheme."""
        full = self.current.continue_from[m.id] if state is None else state
        if self.role is None:
            return dict(full)
        return split_adapter(full, self.role.layout, int(m.device.cut_layer))[0]
