"""One device in a deployment: its client stage, its own data and its adapter; only cut tensors and
adapter payloads leave it.

The device runs the same `SplitClient` as the simulation and encodes its messages with the same codecs;
the server drives it with instructions (see `protocol`), which it fetches by long polling.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import grpc
import numpy as np

from fleettune.aggregation.hetero import lora_deltas
from fleettune.aggregation.ranks import fresh_adapter
from fleettune.compression import UpdateLink, parse_cut_codec, parse_update_codec, receive_state
from fleettune.data import Split
from fleettune.data.labels import LabelVocabulary
from fleettune.data.sources.local import EXPECTED, split_file
from fleettune.data.sources.text_files import RawRows, read_split_file
from fleettune.draws import Role, global_rng_kept, party_draws
from fleettune.errors import DataError, InputError
from fleettune.fleet import Device, Hardware, Link
from fleettune.messages import CutGradients, CutWire
from fleettune.models.adapters import AdapterState
from fleettune.models.catalog import load_tokenizer, resolve_model
from fleettune.models.loading import load_task_model
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import FullModel, Task, client_stage, full_model
from fleettune.runtime.net.assignment import Assignment
from fleettune.runtime.net.base_fold import split_base
from fleettune.runtime.net.learner import LocalLearner
from fleettune.runtime.net.protocol import ACTIVATIONS, ADAPTER, JOIN, POLL, SECAGG, Do, Instruction
from fleettune.runtime.net.secure_device import SecureParty
from fleettune.runtime.net.transport.client import RETRYABLE
from fleettune.runtime.net.transport.errors import RemoteError
from fleettune.schemes.batching import BatchSource
from fleettune.schemes.split.client import SplitClient
from fleettune.training import LocalOptimizer

log = logging.getLogger("fleettune.net")

REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)  # retrying cannot help
BATCH_STREAM = 1  # the simulation's RNG stream of client batch orders: `RunSetup.rng(1, index)`


class Reply(Protocol):
    @property
    def fields(self) -> Mapping[str, str]: ...

    @property
    def payload(self) -> bytes: ...


class Caller(Protocol):
    """A connection to the server (gRPC, or in-process in tests)."""

    def call(
        self, kind: str, fields: Mapping[str, str] | None = None, payload: bytes = b"", timeout_s: float | None = None
    ) -> Reply: ...


def read_train_rows(data_dir: Path, text_column: str = "text", label_column: str = "label") -> RawRows:
    """The device's own training file (``train.csv|jsonl|txt`` in `data_dir`)."""
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist; expected a directory with {EXPECTED}")
    path = split_file(data_dir, "train")
    if path is None:
        raise DataError(f"data directory {data_dir} has no train file; expected {EXPECTED}")
    rows = read_split_file(path, text_column, label_column)
    if not rows.texts:
        raise DataError(f"{path}: no training rows; expected at least one")
    return rows


@dataclass
class DeviceSummary:
    rounds_trained: int
    steps: int
    uploads: int
    loads: int


class DeviceAgent:
    """Joins the server, then follows its instructions until told training is over."""

    def __init__(self, device_id: str, caller: Caller, data_dir: Path, kind: str = "", model: str | None = None):
        self.id = device_id
        self.caller = caller
        self.kind = kind
        self.model = model  # where this device keeps the model, when not where the server names it
        self.data_dir = data_dir
        self.rows: RawRows | None = None
        self.client: SplitClient | LocalLearner | None = None  # split schemes: a client stage; fl: the model
        self.wire = CutWire()
        self.uplink: UpdateLink | None = None
        self.downlink: UpdateLink | None = None
        self.base: AdapterState = {}  # the global adapter (part) last delivered: updates are measured from it
        self.assignment: Assignment | None = None
        self.secure = SecureParty(device_id)
        self.busy_s = 0.0
        self.tail_s = 0.0  # the last step's backward: what the server's scheduler takes as this device's tail
        self.upload_s = 0.0  # the last adapter upload: added to the tail of a step that ends with one
        self.summary = DeviceSummary(0, 0, 0, 0)

    def run(self, max_rejoins: int = 20, rejoin_wait_s: float = 1.0) -> DeviceSummary:
        """Train until the server says training is over. An error reply (dropped from a round, the server
        restarted) makes the device join again and carry on from the global adapter the join hands it. A
        server still unreachable after the transport's own retries (`--retry` seconds) ends the run."""
        self.rows = read_train_rows(self.data_dir)
        failures = 0
        while True:
            try:
                self.join()
                if self._follow():
                    return self.summary
            except RemoteError as exc:
                failures += 1
                if exc.code in REFUSED or exc.code in RETRYABLE or failures > max_rejoins:
                    raise
                log.warning("device %s: %s; joining again", self.id, exc)
                time.sleep(rejoin_wait_s)

    def _follow(self) -> bool:
        """Carry out instructions; True once training is over."""
        while True:
            reply = self.caller.call(POLL, self._status())
            instruction = Instruction.parse(reply.fields, reply.payload)
            if instruction.do is Do.DONE:
                return True
            if instruction.do is Do.FORWARD:
                self.step(instruction)
            elif instruction.do is Do.TRAIN:
                self.train(instruction)
            elif instruction.do is Do.UPLOAD:
                self.upload(instruction)
            elif instruction.do is Do.LOAD:
                self.load(instruction.payload)
            elif instruction.do is Do.FOLD:
                self.fold(instruction)
            elif instruction.do is Do.REBASE:
                self.rebase(instruction.payload)
            elif instruction.do is Do.SECAGG:
                self.secure_phase(instruction)

    def join(self) -> None:
        assert self.rows is not None
        reply = self.caller.call(JOIN, {"kind": self.kind, "samples": str(len(self.rows.texts))})
        assignment = Assignment.from_json(reply.fields["assignment"])
        self.client = self._build(assignment, self.rows)
        self.wire = CutWire(
            parse_cut_codec(assignment.activations, "compression.activations"),
            parse_cut_codec(assignment.gradients, "compression.gradients"),
            assignment.unpad,
        )
        self.assignment = assignment
        state = self._take(reply.payload)  # flora: with the stacked updates the server folded before
        codec = parse_update_codec(assignment.updates)
        self.uplink, self.downlink = UpdateLink(codec, state), UpdateLink(codec, state)
        log.info("device %s joined: cut %d, rank %d", self.id, assignment.cut_layer, assignment.lora_rank)

    def _build(self, a: Assignment, rows: RawRows) -> SplitClient | LocalLearner:
        source = resolve_model(self.model or a.model)
        tokenizer = load_tokenizer(source)
        labels = LabelVocabulary(list(a.labels), a.numeric_labels).encode(rows.labels, rows.path, rows.lines)
        split = Split(rows.texts, labels)
        lora = LoraSpec(a.lora_rank, a.lora_alpha, a.lora_dropout, a.lora_targets)
        with global_rng_kept():  # LoRA init, overwritten by the initial adapter, must not move the global RNG
            model = load_task_model(
                source.path,
                Task.CLASSIFICATION,
                num_labels=len(a.labels),
                pad_token_id=tokenizer.pad_token_id,
                seed=a.seed,
            )
            whole_or_stage = (
                full_model(model, lora, Task.CLASSIFICATION)
                if a.scheme == "fl"
                else client_stage(model, a.cut_layer, lora, Task.CLASSIFICATION)
            )
        draws = party_draws(a.seed, Role.CLIENT, a.index)  # the dropout masks its simulated twin draws
        batches = BatchSource(tokenizer, a.max_length, a.batch_size, a.pad_to_max_length)
        stream = batches.stream(split, np.random.default_rng([a.seed, BATCH_STREAM, a.index]))
        local_opt = LocalOptimizer(a.optimizer, a.weight_decay)
        if isinstance(whole_or_stage, FullModel):
            return LocalLearner(whole_or_stage, stream, a.lr, local_opt, a.lr_schedule, a.privacy(), draws=draws)
        device = Device(self.id, Hardware(a.kind, a.tflops, a.memory_gib, a.power_w), Link(), a.cut_layer)
        return SplitClient(
            self.id, device, a.cut_layer, whole_or_stage, stream, len(split), a.lr, local_opt, a.privacy(), draws=draws
        )

    def step(self, instruction: Instruction) -> None:
        client = self._client()
        assert isinstance(client, SplitClient), "forward steps are for split schemes"
        started = time.perf_counter()
        message = client.forward(client.next_batch(), instruction.step)
        payload = message.encode(self.wire)
        self.busy_s += time.perf_counter() - started
        reply = self.caller.call(ACTIVATIONS, {"round": str(instruction.round), "step": str(instruction.step)}, payload)
        started = time.perf_counter()
        client.backward(CutGradients.decode(reply.payload), instruction.lr_factor, len(reply.payload))
        self.tail_s = time.perf_counter() - started
        self.busy_s += self.tail_s
        self.summary.steps += 1

    def train(self, instruction: Instruction) -> None:
        learner = self._client()
        assert isinstance(learner, LocalLearner), "local training is for fl"
        started = time.perf_counter()
        learner.train(instruction.steps, instruction.round, instruction.rounds)
        self.busy_s += time.perf_counter() - started
        self.summary.steps += instruction.steps

    def upload(self, instruction: Instruction) -> None:
        assert self.uplink is not None
        client = self._client()
        started = time.perf_counter()
        payload = self.uplink.send(client.read())
        self.caller.call(ADAPTER, {"round": str(instruction.round)}, payload)
        self.upload_s = time.perf_counter() - started
        self.uplink.receive(payload)  # delivered: both ends now hold what it carried
        self.summary.uploads += 1

    def load(self, payload: bytes) -> None:
        assert self.downlink is not None and self.uplink is not None
        client = self._client()
        delivered = self.downlink.receive(payload)
        client.write(delivered)
        client.received_peak = max(client.received_peak, len(payload))
        self.uplink.rebase(delivered)  # the next update is measured from the new global part
        self.base = delivered
        self.summary.loads += 1

    def rebase(self, payload: bytes) -> None:
        """flora, after missing aggregations: fold their summed base updates, then go on from the adapter sent."""
        state, base_update = split_base(receive_state(payload))
        self._split_client().fold([base_update], state)
        self._restarted(state, len(payload))

    def _take(self, payload: bytes) -> AdapterState:
        """Fold the base-weight updates a whole-state payload carries (flora), then take its adapter."""
        state, base_update = split_base(receive_state(payload))
        if base_update:
            self._split_client().merge_base(base_update)
        self._client().write(state)
        self.base = state
        return state

    def fold(self, instruction: Instruction) -> None:
        """flora's aggregation: fold this device's part of the stacked adapter into the base weights and go on
        from a fresh adapter, drawn from the run's seed as the server drew it."""
        assert self.assignment is not None
        a = self.assignment
        stacked = receive_state(instruction.payload)
        fresh = fresh_adapter(stacked, a.lora_rank, a.seed, instruction.version, a.index)
        self._split_client().fold([lora_deltas(stacked, a.lora_alpha, instruction.stacked_rank)], fresh)
        self._restarted(fresh, len(instruction.payload))

    def _restarted(self, state: AdapterState, received: int) -> None:
        """The client now trains `state` afresh: updates are measured from it both ways, with nothing carried."""
        assert self.downlink is not None and self.uplink is not None
        client = self._split_client()
        client.received_peak = max(client.received_peak, received)
        self.uplink.reset(state)
        self.downlink.reset(state)
        self.base = state
        self.summary.loads += 1

    def secure_phase(self, instruction: Instruction) -> None:
        """Answer one phase of a secure aggregation; the masked input goes up in place of the adapter upload."""
        phase, group = instruction.phase, instruction.group
        values = self._client().read()
        reply = self.secure.answer(phase, group, instruction.payload, instruction.detail, values, self.base)
        fields = {"round": str(instruction.round), "phase": phase, "group": str(group)}
        if phase == "masked_input":
            fields["clipped"] = str(self.secure.clipped)
            self.summary.uploads += int(bool(reply))
        self.caller.call(SECAGG, fields, reply)

    def _split_client(self) -> SplitClient:
        client = self._client()
        if not isinstance(client, SplitClient):
            raise InputError("the server sent base-weight updates to a device without a split stage; expected none")
        return client

    def _client(self) -> SplitClient | LocalLearner:
        assert self.client is not None, "instructions come after joining"
        return self.client

    def _status(self) -> dict[str, str]:
        memory = asdict(self.client.memory()) if self.client is not None else {}
        status = {
            "memory": json.dumps(memory),
            "busy_s": repr(self.busy_s),
            "tail_s": repr(self.tail_s),
            "upload_s": repr(self.upload_s),
        }
        if isinstance(self.client, LocalLearner):
            status["loss"] = repr(self.client.last_loss)
        return status
