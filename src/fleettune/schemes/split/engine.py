"""Machinery every split scheme shares: the parties, one client's step, aggregation and the record."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch

from fleettune.aggregation import merge_into, sample_weights
from fleettune.aggregation.policy import AggregationPolicy
from fleettune.aggregation.ranks import Aggregate, RankMix
from fleettune.aggregation.secure import masked_upload_bytes, secure_combine
from fleettune.aggregation.sum_groups import SumGroup, sum_groups
from fleettune.compression import UpdateLink, receive_state, send_state
from fleettune.draws import Role, party_draws
from fleettune.fleet.cost import compute_s, downlink_s, uplink_s
from fleettune.messages import CutActivations, CutGradients
from fleettune.models.adapters import AdapterState, read_adapter, split_adapter, task_model, write_adapter
from fleettune.models.layout import StackLayout
from fleettune.models.stages import FullModel, client_stage
from fleettune.runtime.events import Activity, Event
from fleettune.runtime.ledger import ADAPTER, CUT, EnergyLedger, TrafficLedger
from fleettune.runtime.memory import MemoryBreakdown
from fleettune.runtime.progress import RoundRecord
from fleettune.runtime.sim.clock import StepPhases, Timeline, server_work
from fleettune.runtime.sim.cutoffs import Cut, cut_transfers
from fleettune.runtime.sim.flop_book import FlopBook
from fleettune.runtime.sim.participation import Participation, ParticipationLog, Spend
from fleettune.schemes.base import RunSetup, SchemeResult
from fleettune.schemes.evaluator import EvalResult
from fleettune.schemes.secure_cost import charge_protocol
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
    evaluated: AdapterState | None = None  # the global adapter `final` scored
    now_s: float = 0.0
    ready_s: dict[str, float] = field(default_factory=dict)  # when each client's own part of the last step ended
    step_losses: list[float] = field(default_factory=list)
    steps_done: int = 0
    started: float = field(default_factory=time.perf_counter)
    uplinks: dict[str, UpdateLink] = field(default_factory=dict)  # client-side adapters, client to server
    downlinks: dict[str, UpdateLink] = field(default_factory=dict)  # their new values, server to client
    participation: Participation = field(init=False)
    log: ParticipationLog = field(default_factory=ParticipationLog)
    mix: RankMix = field(init=False)
    policy: AggregationPolicy = field(init=False)

    def __post_init__(self) -> None:
        self.participation = self.setup.participation()
        self.mix = self.setup.rank_mix()
        self.policy = self.setup.aggregation_policy()
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

    def note_ready(self, timeline: Timeline, ids: Sequence[str]) -> None:
        """Each of `ids` is free from the end of its own last event in a step's `timeline` (its backward,
        or where it left): its adapter upload can start then, before the slowest client is done."""
        self.ready_s = {c: max((e.end_s for e in timeline.events if e.party == c), default=timeline.end_s) for c in ids}

    def note_step(self, losses: Sequence[tuple[float, int]]) -> None:
        """One optimizer step of the schedule went by; `losses` of the clients whose work in it counted
        (none: every client had left or was offline, and the step only moves the schedule on)."""
        if losses:
            total = sum(n for _, n in losses)
            self.step_losses.append(sum(loss * n for loss, n in losses) / max(1, total))
        self.steps_done += 1

    def settle(self, client: SplitClient, spent: Spend, cut: Cut | None = None) -> None:
        """Note what `client` spent; when `cut` says it left, it leaves the round."""
        self.log.spend(client.id, spent)
        if cut is not None and client.id in cut.left:
            self.log.leave(client.id, cut.left[client.id])


def build_clients(setup: RunSetup, initial: AdapterState) -> list[SplitClient]:
    """One client stage per device at its cut (and LoRA rank), loaded with its share of the initial
    adapter's client part."""
    clients = []
    mix = setup.rank_mix()
    for index, data in enumerate(setup.clients):
        cut = int(data.device.cut_layer)
        stage = client_stage(setup.new_model(), cut, setup.lora_for(data.id), setup.task)
        client = SplitClient(
            data.id,
            data.device,
            cut,
            stage,
            setup.batches.stream(data.train, setup.rng(1, index)),
            len(data.train),
            setup.plan.lr,
            setup.plan.local_opt,
            setup.privacy_for(index),
            draws=party_draws(setup.plan.seed, Role.CLIENT, index),
        )
        client.write(split_adapter(mix.start(initial, data.id), stage.layout, cut)[0])
        clients.append(client)
    return clients


def initial_state(setup: RunSetup) -> tuple[AdapterState, FullModel]:
    """The run's initial global adapter (at the global rank), and a whole model used only to evaluate
    global adapters."""
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


def _rank(ctx: SplitContext, client: SplitClient) -> int:
    """The LoRA rank `client` trains at, on both sides of its cut."""
    return ctx.setup.lora_for(client.id).rank


def forward(ctx: SplitContext, client: SplitClient) -> Forwarded:
    """Client forward on its next batch; the encoded activations go up its link."""
    batch = client.next_batch()
    # FLOPs depend on the cut, the client's LoRA rank and the batch shape, so each is part of the key.
    key = ("client-forward", client.cut, _rank(ctx, client), *batch.input_ids.shape)
    flops, message = ctx.flops.run(key, lambda: client.forward(batch, ctx.steps_done))
    payload = message.encode(ctx.setup.wire)
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
    key = ("server", sent.client.cut, _rank(ctx, sent.client), *message.attention_mask.shape)
    flops, (grads, loss, switch_s) = ctx.flops.run(key, lambda: ctx.server.process(message, loss_weight))
    payload = grads.encode(ctx.setup.wire, message.attention_mask)
    return Served(payload, loss, len(message.labels), compute_s(flops, ctx.setup.server), switch_s)


def backward(ctx: SplitContext, sent: Forwarded, served: Served) -> StepPhases:
    """Client backward from the received gradient; returns the client's phase durations (bytes and
    energy are charged by `settle_step`, once the step's timeline says what was spent)."""
    client = sent.client
    grads = CutGradients.decode(served.payload)
    key = ("client-backward", client.cut, _rank(ctx, client), *grads.grad.shape[:2])
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
    return phases


def settle_step(
    ctx: SplitContext, sent: Sequence[Forwarded], served: Sequence[Served], phases: Sequence[StepPhases], cut: Cut
) -> None:
    """Charge each client's bytes and energy for the step: all of it, or what it spent before leaving."""
    for s, o, p in zip(sent, served, phases, strict=True):
        client = s.client
        power = client.device.hardware.power_w
        spent = cut.spent.get(client.id)
        if spent is None:
            ctx.traffic.up(client.id, s.payload, CUT)
            ctx.traffic.down(client.id, o.payload, CUT)
            busy = p.forward_s + p.backward_s + p.uplink_s + p.downlink_s
            ctx.energy.client_busy(client.id, power, busy)
            ctx.energy.server_busy(ctx.setup.server.power_w, p.server_s + p.switch_s)
            spent = Spend(busy, p.server_s + p.switch_s, len(s.payload), len(o.payload))
        else:
            ctx.traffic.count(client.id, CUT, spent.uplink_bytes, spent.downlink_bytes)
            ctx.energy.client_busy(client.id, power, spent.client_s)
            ctx.energy.server_busy(ctx.setup.server.power_w, spent.server_s)
        ctx.settle(client, spent, cut)


def full_view(ctx: SplitContext, client: SplitClient) -> AdapterState:
    """The client's whole adapter: its own part joined with what the server holds for it."""
    full = dict(client.read())
    full.update(ctx.server.server_part(client.id))
    return full


Upload = tuple[UpdateLink, bytes]  # the link as it will be once the payload is delivered, and the payload


def prepare_upload(ctx: SplitContext, client: SplitClient) -> Upload:
    """The client-side adapter's payload, sent on a copy of the link: only a delivery commits it."""
    link = copy.deepcopy(ctx.uplinks[client.id])
    return link, link.send(client.read())


def upload_parts(
    ctx: SplitContext,
    clients: Sequence[SplitClient],
    round_index: int,
    prepared: dict[str, Upload] | None = None,
    drop_after_s: dict[str, float] | None = None,
    deadline_at: float | None = None,
    masked: Mapping[str, int] | None = None,
) -> tuple[list[SplitClient], list[AdapterState]]:
    """Each client sends its client-side adapter (`prepared` ones already encoded); the server joins it
    with its side. Returns the clients whose upload arrived and their full views; the others left (a
    disconnect `drop_after_s` seconds into the upload, or the deadline). With secure aggregation, `masked`
    gives each client's masked input size: what goes up in place of its adapter payload."""
    uploads = {c.id: (prepared or {}).get(c.id) or prepare_upload(ctx, c) for c in clients}
    sizes = {c.id: len(uploads[c.id][1]) if masked is None else masked[c.id] for c in clients}
    seconds = {c.id: uplink_s(c.device, sizes[c.id]) for c in clients}
    drops = {c: s for c, s in (drop_after_s or {}).items() if c in seconds}
    starts = {c.id: min(ctx.now_s, ctx.ready_s.get(c.id, ctx.now_s)) for c in clients}
    cut = cut_transfers(seconds, sizes, Activity.ADAPTER_UPLINK, round_index, ctx.now_s, drops, deadline_at, starts)
    arrived, views = [], []
    for client in clients:
        link, payload = uploads[client.id]
        spent = cut.spent.get(client.id)
        if spent is None:
            ctx.traffic.count(client.id, ADAPTER, uplink=sizes[client.id])
            spent = Spend(client_s=seconds[client.id], uplink_bytes=sizes[client.id])
            ctx.uplinks[client.id] = link
            view = link.receive(payload)
            view.update(ctx.server.server_part(client.id))
            arrived.append(client)
            views.append(view)
        else:
            ctx.traffic.count(client.id, ADAPTER, uplink=spent.uplink_bytes)
        ctx.settle(client, spent, cut)
    ctx.advance(cut.timeline, round_index)
    return arrived, views


def download_parts(
    ctx: SplitContext,
    clients: Sequence[SplitClient],
    full: AdapterState | Callable[[SplitClient], AdapterState],
    round_index: int,
    deadline_at: float | None = None,
    merges: Callable[[SplitClient], Sequence[Aggregate]] | None = None,
) -> list[SplitClient]:
    """The server splits `full` (or each client's own `full(client)`) at each client's cut and sends
    each client its part. With `merges`, a client first receives the client part of each stacked
    adapter it has not folded into its base weights yet, folds them in, and starts its part afresh.
    Returns the clients it reached; a download that would end after `deadline_at` is cut there and
    its client leaves."""
    sent: dict[str, tuple[UpdateLink | None, list[bytes], list[Aggregate], AdapterState]] = {}
    for client in clients:
        part, _ = split_adapter(full(client) if callable(full) else full, ctx.layout, client.cut)
        pending = list(merges(client)) if merges is not None else []
        link: UpdateLink | None = None
        if pending:
            payloads = [send_state(ctx.setup.updates, _client_part(ctx, client, a)) for a in pending]
        else:
            link = copy.deepcopy(ctx.downlinks[client.id])
            payloads = [link.send(part)]
        sent[client.id] = (link, payloads, pending, part)
    sizes = {c.id: sum(len(p) for p in sent[c.id][1]) for c in clients}
    seconds = {c.id: downlink_s(c.device, sizes[c.id]) for c in clients}
    cut = cut_transfers(seconds, sizes, Activity.ADAPTER_DOWNLINK, round_index, ctx.now_s, {}, deadline_at)
    reached = []
    for client in clients:
        link, payloads, pending, part = sent[client.id]
        spent = cut.spent.get(client.id)
        if spent is None:
            for payload in payloads:
                ctx.traffic.down(client.id, payload, ADAPTER)
            spent = Spend(client_s=seconds[client.id], downlink_bytes=sizes[client.id])
            if link is None:  # stacked adapters: folded into the base weights, then a fresh adapter
                deltas = [
                    ctx.mix.deltas(receive_state(payload), aggregate.stacked_rank)
                    for aggregate, payload in zip(pending, payloads, strict=True)
                ]
                client.fold(deltas, part)
                ctx.downlinks[client.id].reset(part)
                ctx.uplinks[client.id].reset(part)
            else:
                ctx.downlinks[client.id] = link
                delivered = link.receive(payloads[0])  # the link's copy, now what both ends hold
                client.write(delivered)
                ctx.uplinks[client.id].rebase(delivered)  # the client's next update is measured from here
            client.received_peak = max(client.received_peak, max(len(p) for p in payloads))
            reached.append(client)
        else:
            ctx.traffic.count(client.id, ADAPTER, downlink=spent.downlink_bytes)
        ctx.settle(client, spent, cut)
    ctx.advance(cut.timeline, round_index)
    return reached


def fold_stacked(
    mix: RankMix, server: ServerRole, evaluation: FullModel, stacked: Aggregate
) -> dict[str, torch.Tensor]:
    """The server's side of a flora aggregation: the stacked adapter's dense update folded into the base weights
    the server holds and into the evaluation model; returns that update (keyed by module path in the full model).
    Simulation and deployment both fold through here."""
    assert stacked.stacked is not None
    deltas = mix.deltas(stacked.stacked, stacked.stacked_rank)
    server.merge(deltas)
    merge_into(task_model(evaluation.peft), deltas)
    return deltas


def _client_part(ctx: SplitContext, client: SplitClient, aggregate: Aggregate) -> AdapterState:
    assert aggregate.stacked is not None
    return split_adapter(aggregate.stacked, ctx.layout, client.cut)[0]


def combine_views(
    mix: RankMix,
    policy: AggregationPolicy,
    views: Sequence[AdapterState],
    ids: Sequence[str],
    samples: Sequence[int],
    round_index: int,
    version: int,
    previous: AdapterState | None,
) -> Aggregate:
    """The clients' full views combined: FedAvg weighted by samples (or the run's way of mixing LoRA
    ranks), or, beyond plain FedAvg, the aggregation policy applied from `previous` (the global adapter
    they started from). Simulation and deployment both aggregate through here."""
    if policy.plain:
        return mix.combine(views, list(ids), sample_weights(list(samples)), version)
    assert previous is not None and mix.uniform, "a policy beyond FedAvg needs equal ranks and the global"
    state = policy.combine(previous, views, list(ids), list(samples), round_index)
    return Aggregate(state, {c: state for c in mix.ranks})


def aggregate(
    ctx: SplitContext,
    views: Sequence[AdapterState],
    clients: Sequence[SplitClient],
    round_index: int,
    version: int = 0,
    previous: AdapterState | None = None,
) -> Aggregate:
    """The clients' full views combined (FedAvg weighted by sample counts, or the run's way of mixing
    LoRA ranks), priced as 2 FLOPs per value per client. Beyond plain FedAvg (a robust rule, DP, an
    update attack) the run's aggregation policy combines them from `previous`, the global adapter they
    started from; the runner allows that only with equal ranks."""
    ids = [c.id for c in clients]
    combined = combine_views(
        ctx.mix, ctx.policy, views, ids, [c.num_samples for c in clients], round_index, version, previous
    )
    values = sum(t.numel() for view in views for t in view.values())
    seconds = compute_s(2 * values, ctx.setup.server)
    ctx.energy.server_busy(ctx.setup.server.power_w, seconds)
    ctx.advance(server_work(seconds, Activity.AGGREGATE, round_index, ctx.now_s), round_index)
    return combined


def secure_aggregate(
    ctx: SplitContext,
    views: Sequence[AdapterState],
    clients: Sequence[SplitClient],
    roster: Sequence[str],
    round_index: int,
    previous: AdapterState,
) -> Aggregate | None:
    """`aggregate` with each client's own part (what it uploaded) summed through secure aggregation over the
    `roster` (the clients online when the round began) and the server's parts added in the clear; equal ranks
    only. The protocol's messages are charged to the devices' links before the server's averaging. None when
    fewer than the threshold of masked inputs arrived: the global adapter stays."""
    held = [frozenset(split_adapter(view, ctx.layout, c.cut)[0]) for view, c in zip(views, clients, strict=True)]
    ids = [c.id for c in clients]
    groups = secure_groups(ctx, roster, previous)
    state, protocol = secure_combine(
        ctx.policy, previous, views, ids, [c.num_samples for c in clients], held, groups, round_index
    )
    devices = {c.id: c.device for c in ctx.clients}
    phase = charge_protocol(protocol, devices, ctx.traffic, ctx.energy)
    ctx.advance(phase.timeline(round_index, ctx.now_s), round_index)
    if state is None:
        return None
    values = sum(t.numel() for view in views for t in view.values())
    seconds = compute_s(2 * values, ctx.setup.server)
    ctx.energy.server_busy(ctx.setup.server.power_w, seconds)
    ctx.advance(server_work(seconds, Activity.AGGREGATE, round_index, ctx.now_s), round_index)
    return Aggregate(state, {c: state for c in ctx.mix.ranks})


def secure_groups(ctx: SplitContext, roster: Sequence[str], previous: AdapterState) -> list[SumGroup]:
    """How the roster's devices sum their client-side keys: each key among the devices holding it (`sum_groups`)."""
    spec = ctx.policy.spec.secure
    assert spec is not None, "the run has no secure aggregation"
    cuts = {c.id: c.cut for c in ctx.clients}
    holdings = {client: split_adapter(previous, ctx.layout, cuts[client])[0] for client in roster}
    return sum_groups(holdings, spec.threshold)


def masked_sizes(ctx: SplitContext, roster: Sequence[str], previous: AdapterState) -> dict[str, int] | None:
    """Each roster device's masked input size under secure aggregation (None without it)."""
    spec = ctx.policy.spec.secure
    if spec is None:
        return None
    groups = secure_groups(ctx, roster, previous)
    return {client: masked_upload_bytes(spec, client, groups) for client in roster}


def record_round(
    ctx: SplitContext,
    round_index: int,
    losses: Sequence[tuple[float, int]],
    global_state: Callable[[], AdapterState],
) -> bool:
    """Close the round (its participation included) and append its record; evaluation (if due) does not
    advance the virtual clock. `losses` are those of the clients whose work counted. True when the run
    should stop here: its last round, a stop was requested, or it reached its target and was asked to stop
    there."""
    plan = ctx.setup.plan
    last = ctx.setup.last_round(round_index)
    result = None
    if last or (round_index + 1) % plan.eval_every == 0:
        ctx.evaluated = global_state()
        write_adapter(ctx.evaluation.peft, ctx.evaluated)
        result = ctx.setup.evaluator(ctx.evaluation.logits)
        ctx.final = result
    total = sum(n for _, n in losses)
    record = RoundRecord(
        round=round_index + 1,
        sim_time_s=ctx.now_s,
        wall_time_s=time.perf_counter() - ctx.started,
        train_loss=sum(loss * n for loss, n in losses) / max(1, total) if losses else None,
        accuracy=result.scores.accuracy if result else None,
        macro_f1=result.scores.macro_f1 if result else None,
        **asdict(ctx.log.close()),
        epsilon=ctx.policy.epsilon(),
    )
    ctx.history.append(record)
    ctx.setup.on_round(record)
    return last or plan.reached(record.accuracy)


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
        participation=ctx.log.totals,
        aggregations=ctx.policy.notes,
        client_steps={c.id: c.steps_taken for c in ctx.clients},
        cut_batches={c.id: c.batches_sent for c in ctx.clients},
        secure_aggregation=None if ctx.policy.secure is None else ctx.policy.secure.totals,
    )
