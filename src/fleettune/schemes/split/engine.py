"""Machinery every split scheme shares: the parties, one client's step, aggregation and the record."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fleettune.aggregation import fedavg, sample_weights
from fleettune.compression import UpdateLink
from fleettune.fleet.cost import compute_s, downlink_s, uplink_s
from fleettune.messages import CutActivations, CutGradients
from fleettune.models.adapters import AdapterState, read_adapter, split_adapter, write_adapter
from fleettune.models.layout import StackLayout
from fleettune.models.stages import FullModel, client_stage
from fleettune.runtime.events import Activity, Event
from fleettune.runtime.ledger import EnergyLedger, TrafficLedger
from fleettune.runtime.memory import MemoryBreakdown
from fleettune.runtime.progress import RoundRecord
from fleettune.runtime.sim.clock import StepPhases, Timeline, server_work, transfers
from fleettune.runtime.sim.flop_book import FlopBook
from fleettune.schemes.base import RunSetup, SchemeResult
from fleettune.schemes.evaluator import EvalResult
from fleettune.schemes.seeding import seeded_full_model
from fleettune.schemes.split.client import SplitClient
from fleettune.schemes.split.servers import ServerRole
from fleettune.training import lr_factor

TIMELINE_ROUNDS = 2  # rounds whose events are kept (for the Gantt chart)


@dataclass
class SplitContext:
    """The live parties of one split run and everything they are measured by."""

    setup: RunSetup
    clients: list[SplitClient]
    server: ServerRole
    evaluation: FullModel
    total_steps: int
    flops: FlopBook = field(default_factory=FlopBook)
    traffic: TrafficLedger = field(default_factory=TrafficLedger)
    energy: EnergyLedger = field(default_factory=EnergyLedger)
    events: list[Event] = field(default_factory=list)
    history: list[RoundRecord] = field(default_factory=list)
    server_memory: MemoryBreakdown = field(default_factory=MemoryBreakdown)
    final: EvalResult | None = None
    now_s: float = 0.0
    step_losses: list[float] = field(default_factory=list)
    steps_done: int = 0
    started: float = field(default_factory=time.perf_counter)
    uplinks: dict[str, UpdateLink] = field(default_factory=dict)  # client-side adapters, client to server
    downlinks: dict[str, UpdateLink] = field(default_factory=dict)  # their new values, server to client

    def __post_init__(self) -> None:
        for client in self.clients:
            start = client.read()
            self.uplinks[client.id] = UpdateLink(self.setup.updates, start)
            self.downlinks[client.id] = UpdateLink(self.setup.updates, start)

    @property
    def layout(self) -> StackLayout:
        return self.server.layout

    def factor(self) -> float:
        """Learning-rate multiplier of the current step (same schedule as `central`)."""
        return lr_factor(self.setup.plan.lr_schedule, self.steps_done, self.total_steps)

    def advance(self, timeline: Timeline, round_index: int) -> None:
        if round_index < TIMELINE_ROUNDS:
            self.events += timeline.events
        self.now_s = timeline.end_s

    def note_step(self, losses: Sequence[tuple[float, int]]) -> None:
        total = sum(n for _, n in losses)
        self.step_losses.append(sum(loss * n for loss, n in losses) / max(1, total))
        self.steps_done += 1


def build_clients(setup: RunSetup, initial: AdapterState) -> list[SplitClient]:
    """One client stage per device at its cut, loaded with the initial adapter's client part."""
    clients = []
    for index, data in enumerate(setup.clients):
        cut = int(data.device.cut_layer)
        stage = client_stage(setup.new_model(), cut, setup.lora, setup.task)
        client = SplitClient(
            data.id,
            data.device,
            cut,
            stage,
            setup.batches.stream(data.train, setup.rng(1, index)),
            len(data.train),
            setup.plan.lr,
            setup.plan.weight_decay,
        )
        client.write(split_adapter(initial, stage.layout, cut)[0])
        clients.append(client)
    return clients


def initial_state(setup: RunSetup) -> tuple[AdapterState, FullModel]:
    """The run's initial global adapter, and a whole model used only to evaluate global adapters."""
    model = seeded_full_model(setup)
    model.eval()  # it only ever evaluates: no dropout, and no draws from the global RNG
    return read_adapter(model.peft), model


def cuts_of(setup: RunSetup) -> dict[str, int]:
    return {c.id: int(c.device.cut_layer) for c in setup.clients}


@dataclass
class Forwarded:
    client: SplitClient
    payload: bytes
    forward_s: float
    uplink_s: float


def forward(ctx: SplitContext, client: SplitClient) -> Forwarded:
    """Client forward on its next batch; the encoded activations go up its link."""
    batch = client.next_batch()
    key = ("client-forward", client.cut, *batch.input_ids.shape)
    flops, message = ctx.flops.run(key, lambda: client.forward(batch, ctx.steps_done))
    payload = message.encode(ctx.setup.wire)
    ctx.traffic.up(client.id, payload)
    return Forwarded(client, payload, compute_s(flops, client.device.hardware), uplink_s(client.device, len(payload)))


@dataclass
class Served:
    payload: bytes
    loss: float
    samples: int
    server_s: float
    switch_s: float


def serve(ctx: SplitContext, sent: Forwarded, loss_weight: float = 1.0) -> Served:
    """The server decodes the activations and computes the loss and the cut gradient."""
    message = CutActivations.decode(sent.payload)
    key = ("server", sent.client.cut, *message.attention_mask.shape)
    flops, (grads, loss, switch_s) = ctx.flops.run(key, lambda: ctx.server.process(message, loss_weight))
    payload = grads.encode(ctx.setup.wire, message.attention_mask)
    ctx.traffic.down(sent.client.id, payload)
    return Served(payload, loss, len(message.labels), compute_s(flops, ctx.setup.server), switch_s)


def backward(ctx: SplitContext, sent: Forwarded, served: Served) -> StepPhases:
    """Client backward from the received gradient; returns the client's phase durations."""
    client = sent.client
    grads = CutGradients.decode(served.payload)
    key = ("client-backward", client.cut, *grads.grad.shape[:2])
    flops, _ = ctx.flops.run(key, lambda: client.backward(grads, ctx.factor(), len(served.payload)))
    phases = StepPhases(
        client.id,
        sent.forward_s,
        sent.uplink_s,
        served.server_s,
        served.switch_s,
        downlink_s(client.device, len(served.payload)),
        compute_s(flops, client.device.hardware),
    )
    power = client.device.hardware.power_w
    ctx.energy.client_busy(client.id, power, phases.forward_s + phases.backward_s + phases.uplink_s + phases.downlink_s)
    ctx.energy.server_busy(ctx.setup.server.power_w, phases.server_s + phases.switch_s)
    return phases


def full_view(ctx: SplitContext, client: SplitClient) -> AdapterState:
    """The client's whole adapter: its own part joined with what the server holds for it."""
    full = dict(client.read())
    full.update(ctx.server.server_part(client.id))
    return full


def upload_parts(ctx: SplitContext, clients: Sequence[SplitClient], round_index: int) -> list[AdapterState]:
    """Each client sends its client-side adapter; the server joins it with its side."""
    seconds = {}
    views = []
    for client in clients:
        link = ctx.uplinks[client.id]
        payload = link.send(client.read())
        ctx.traffic.up(client.id, payload)
        seconds[client.id] = uplink_s(client.device, len(payload))
        view = link.receive(payload)
        view.update(ctx.server.server_part(client.id))
        views.append(view)
    ctx.advance(transfers(seconds, Activity.ADAPTER_UPLINK, round_index, ctx.now_s), round_index)
    return views


def download_parts(ctx: SplitContext, clients: Sequence[SplitClient], full: AdapterState, round_index: int) -> None:
    """The server splits `full` at each client's cut and sends each client its part."""
    seconds = {}
    for client in clients:
        part, _ = split_adapter(full, ctx.layout, client.cut)
        link = ctx.downlinks[client.id]
        payload = link.send(part)
        ctx.traffic.down(client.id, payload)
        seconds[client.id] = downlink_s(client.device, len(payload))
        delivered = link.receive(payload)
        client.write(delivered)
        ctx.uplinks[client.id].rebase(delivered)  # the client's next update is measured from here
        client.received_peak = max(client.received_peak, len(payload))
    ctx.advance(transfers(seconds, Activity.ADAPTER_DOWNLINK, round_index, ctx.now_s), round_index)


def aggregate(
    ctx: SplitContext, views: Sequence[AdapterState], clients: Sequence[SplitClient], round_index: int
) -> AdapterState:
    """FedAvg of full views weighted by sample counts, priced as 2 FLOPs per value per client."""
    full = fedavg(views, sample_weights([c.num_samples for c in clients]))
    values = sum(t.numel() for t in full.values())
    seconds = compute_s(2 * values * len(views), ctx.setup.server)
    ctx.energy.server_busy(ctx.setup.server.power_w, seconds)
    ctx.advance(server_work(seconds, Activity.AGGREGATE, round_index, ctx.now_s), round_index)
    return full


def record_round(
    ctx: SplitContext,
    round_index: int,
    losses: Sequence[tuple[float, int]],
    global_state: Callable[[], AdapterState],
) -> bool:
    """Append the round's record; evaluation (if due) does not advance the virtual clock. True when
    the run should stop here (it reached its target and was asked to stop there)."""
    plan = ctx.setup.plan
    last = round_index == plan.rounds - 1
    result = None
    if last or (round_index + 1) % plan.eval_every == 0:
        write_adapter(ctx.evaluation.peft, global_state())
        result = ctx.setup.evaluator(ctx.evaluation.logits)
        ctx.final = result
    total = sum(n for _, n in losses)
    record = RoundRecord(
        round=round_index + 1,
        sim_time_s=ctx.now_s,
        wall_time_s=time.perf_counter() - ctx.started,
        train_loss=sum(loss * n for loss, n in losses) / max(1, total),
        accuracy=result.scores.accuracy if result else None,
        macro_f1=result.scores.macro_f1 if result else None,
    )
    ctx.history.append(record)
    ctx.setup.on_round(record)
    return plan.reached(record.accuracy)


def note_server_memory(ctx: SplitContext, concurrent: Sequence[str], received_bytes: int) -> None:
    ctx.server_memory = ctx.server_memory.peak_with(ctx.server.memory(concurrent, received_bytes))


def finish(ctx: SplitContext) -> SchemeResult:
    assert ctx.final is not None, "the last round is always evaluated"
    parameters = sum(p.numel() for p in ctx.evaluation.parameters())
    trainable = sum(p.numel() for p in ctx.evaluation.parameters() if p.requires_grad)
    return SchemeResult(
        history=ctx.history,
        final=ctx.final,
        server_memory=ctx.server_memory,
        client_memory={c.id: c.memory() for c in ctx.clients},
        traffic=ctx.traffic,
        energy=ctx.energy,
        sim_time_s=ctx.now_s,
        parameters=parameters,
        trainable_parameters=trainable,
        events=ctx.events,
        step_losses=ctx.step_losses,
    )
