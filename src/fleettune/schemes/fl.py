"""`fl`: FedAvg over LoRA adapters; every client holds the whole model and trains locally."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict

import numpy as np

from fleettune.aggregation import sample_weights
from fleettune.aggregation.secure import masked_upload_bytes, secure_combine
from fleettune.aggregation.sum_groups import sum_groups
from fleettune.codec import encode_state
from fleettune.compression import UpdateLink
from fleettune.draws import Role, party_draws
from fleettune.fleet.cost import compute_s, downlink_s, uplink_s
from fleettune.models.adapters import AdapterState, read_adapter, write_adapter
from fleettune.runtime.events import Activity
from fleettune.runtime.ledger import ADAPTER, EnergyLedger, TrafficLedger
from fleettune.runtime.memory import MemoryBreakdown
from fleettune.runtime.progress import RoundRecord
from fleettune.runtime.sim.cutoffs import Span, leave_point, spent_until
from fleettune.runtime.sim.flop_book import FlopBook
from fleettune.runtime.sim.participation import ParticipationLog, Spend
from fleettune.schemes.base import SCHEMES, RunSetup, SchemeResult
from fleettune.schemes.local import train_local
from fleettune.schemes.secure_cost import charge_protocol
from fleettune.schemes.seeding import seeded_full_model
from fleettune.training import trainable_parameters


def clients_per_round(total: int, fraction: float) -> int:
    """How many clients `fixed` sampling takes a round (and `poisson` expects to)."""
    return max(1, round(total * fraction))


def draw_clients(rng: np.random.Generator, total: int, fraction: float, sampling: str) -> list[int]:
    """One round's sampled clients, by index, ascending. `fixed`: `clients_per_round` of them without
    replacement. `poisson`: each independently with probability `fraction`, so possibly none; that is the
    sampling the DP accountant's sample rate assumes."""
    if sampling == "poisson":
        return [int(i) for i in np.flatnonzero(rng.random(total) < fraction)]
    if sampling == "fixed":
        return sorted(int(i) for i in rng.choice(total, size=clients_per_round(total, fraction), replace=False))
    raise ValueError(f"client sampling {sampling!r}; expected fixed or poisson")


def _work(down_s: float, train_s: float, up_s: float, down_bytes: int, up_bytes: int) -> list[Span]:
    """A client's round from its start: download, local training, upload."""
    trained = down_s + train_s
    return [
        Span(0.0, down_s, Activity.ADAPTER_DOWNLINK, downlink_bytes=down_bytes),
        Span(down_s, trained),
        Span(trained, trained + up_s, Activity.ADAPTER_UPLINK, uplink_bytes=up_bytes),
    ]


@SCHEMES.register("fl")
def run_fl(setup: RunSetup) -> SchemeResult:
    """Each round: the sampled clients download the global adapter, train `local_steps` (or
    `local_epochs` of their data), upload their adapter; the server averages them weighted by
    sample counts. One model object plays every client in turn (their weights are identical).

    Sampled clients that are offline skip the round. A client's interruptible work is its training
    and upload (a disconnect falls uniformly in it); the deadline cuts whatever ends after it. A client
    that leaves sends no update; the round lasts until the last client finished or left."""
    plan = setup.plan
    model = seeded_full_model(setup)
    global_state = read_adapter(model.peft)
    streams = {c.id: setup.batches.stream(c.train, setup.rng(1, i)) for i, c in enumerate(setup.clients)}
    # One model plays every client; each client's dropout masks still come from its own stream.
    draws = {c.id: party_draws(plan.seed, Role.CLIENT, i) for i, c in enumerate(setup.clients)}
    sampler = setup.rng(2)
    traffic, energy = TrafficLedger(), EnergyLedger()
    client_memory: dict[str, MemoryBreakdown] = {}
    server_memory = MemoryBreakdown()
    history: list[RoundRecord] = []
    started = time.perf_counter()
    sim_time = 0.0
    book = FlopBook()
    result = None
    # Per client and direction: lossy codecs send updates from the state both ends last agreed on.
    downlinks = {c.id: UpdateLink(setup.updates, global_state) for c in setup.clients}
    uplinks = {c.id: UpdateLink(setup.updates, global_state) for c in setup.clients}
    participation = setup.participation()
    log = ParticipationLog()
    policy = setup.aggregation_policy()
    secure = policy.spec.secure
    # Each client's DP-SGD noise comes from its own generator, seeded from the run's seed and its index.
    privacy = {c.id: setup.privacy_for(i) for i, c in enumerate(setup.clients)}
    noise = {c: p.generator() for c, p in privacy.items() if p is not None}
    steps_taken = dict.fromkeys(privacy, 0)
    devices = {c.id: c.device for c in setup.clients}
    for round_index in range(plan.rounds):
        chosen = draw_clients(sampler, len(setup.clients), plan.client_fraction, plan.client_sampling)
        turnout = participation.draw(round_index)
        online = set(log.begin(turnout, [setup.clients[i].id for i in chosen]))
        roster = [setup.clients[i].id for i in chosen if setup.clients[i].id in online]
        # Secure aggregation: every device holds the whole adapter, so one protocol instance over the roster.
        groups = [] if secure is None else sum_groups(dict.fromkeys(roster, global_state), secure.threshold)
        payloads: list[bytes] = []
        views: list[AdapterState] = []
        senders: list[str] = []
        counts: list[int] = []
        losses: list[float] = []
        slowest = 0.0
        for index in chosen:
            client = setup.clients[index]
            if client.id not in online:
                continue
            # Links change only with a delivery: sends go on copies, kept once the payload arrives.
            down_link = copy.deepcopy(downlinks[client.id])
            downlink = down_link.send(global_state)
            delivered = down_link.receive(downlink)
            write_adapter(model.peft, delivered)
            steps = plan.local_steps
            if plan.local_epochs is not None:
                steps = max(1, round(plan.local_epochs * setup.batches.steps_per_epoch(client.train)))
            run = train_local(
                model,
                streams[client.id],
                steps,
                lr=plan.lr,
                local_opt=plan.local_opt,
                schedule=plan.lr_schedule,
                schedule_offset=round_index,
                schedule_total=plan.rounds,
                max_grad_norm=plan.max_grad_norm,
                received_bytes=len(downlink),
                draws=draws[client.id],
                flop_book=book,
                privacy=privacy[client.id],
                noise=noise.get(client.id),
            )
            steps_taken[client.id] += run.steps
            up_link = copy.deepcopy(uplinks[client.id])
            up_link.rebase(delivered)
            upload = up_link.send(read_adapter(model.peft))
            # With secure aggregation the masked adapter goes up in place of the payload, at its own size.
            up_bytes = len(upload) if secure is None else masked_upload_bytes(secure, client.id, groups)
            device = client.device
            previous = client_memory.get(client.id)
            client_memory[client.id] = run.memory if previous is None else previous.peak_with(run.memory)
            down_s, train_s, up_s = (
                downlink_s(device, len(downlink)),
                compute_s(run.flops, device.hardware),
                uplink_s(device, up_bytes),
            )
            spans = _work(down_s, train_s, up_s, len(downlink), up_bytes)
            point = turnout.drop_point(client.id, 1)
            drop_after = None if point is None else down_s + point[1] * (train_s + up_s)
            leave = leave_point(spans, drop_after, setup.deadline_s)
            if leave is not None:
                spent = spent_until(spans, leave.at_s)
                traffic.count(client.id, ADAPTER, spent.uplink_bytes, spent.downlink_bytes)
                energy.client_busy(client.id, device.hardware.power_w, spent.client_s)
                if leave.at_s >= down_s:  # the global adapter had arrived
                    downlinks[client.id] = down_link
                    uplinks[client.id].rebase(delivered)
                log.spend(client.id, spent)
                log.leave(client.id, leave)
                slowest = max(slowest, leave.at_s)
                continue
            downlinks[client.id], uplinks[client.id] = down_link, up_link
            traffic.down(client.id, downlink, ADAPTER)
            traffic.count(client.id, ADAPTER, uplink=up_bytes)
            payloads.append(upload)
            views.append(up_link.receive(upload))
            senders.append(client.id)
            counts.append(len(client.train))
            losses.append(run.mean_loss)
            busy = down_s + train_s + up_s
            energy.client_busy(client.id, device.hardware.power_w, busy)
            log.spend(client.id, Spend(busy, 0.0, up_bytes, len(downlink)))
            slowest = max(slowest, busy)
        aggregation_s = 0.0
        aggregated = bool(views)  # nobody completed (or too few for secure aggregation): the global adapter stays
        if views and policy.secure is not None:
            # The masked adapters went up as the uploads; the protocol's other messages follow them.
            keys = [frozenset(view) for view in views]  # a whole model per device: every key is its own
            state, protocol = secure_combine(policy, global_state, views, senders, counts, keys, groups, round_index)
            aggregation_s += charge_protocol(protocol, devices, traffic, energy).seconds
            aggregated = state is not None
            global_state = global_state if state is None else state
        elif views:
            global_state = policy.combine(global_state, views, senders, counts, round_index)
        if aggregated:
            # Averaging is priced like every other computation: 2 FLOPs per value per client.
            values = sum(t.numel() for t in global_state.values())
            averaging_s = compute_s(2 * values * len(payloads), setup.server)
            energy.server_busy(setup.server.power_w, averaging_s)
            aggregation_s += averaging_s
            held = len(encode_state(global_state))
            received = sum(len(p) for p in payloads)
            server_memory = server_memory.peak_with(MemoryBreakdown(trainable=held, received=received))
        # Clients download, train and upload in parallel: the round lasts as long as its slowest
        # client (or until the last one left), then the aggregation.
        sim_time += slowest + aggregation_s
        last = setup.last_round(round_index)
        result = None
        if last or (round_index + 1) % plan.eval_every == 0:
            write_adapter(model.peft, global_state)
            result = setup.evaluator(model.logits)
        train_loss = None
        if counts:
            weights = sample_weights(counts)
            train_loss = sum(w * loss for w, loss in zip(weights, losses, strict=True))
        record = RoundRecord(
            round=round_index + 1,
            sim_time_s=sim_time,
            wall_time_s=time.perf_counter() - started,
            train_loss=train_loss,
            accuracy=result.scores.accuracy if result else None,
            macro_f1=result.scores.macro_f1 if result else None,
            **asdict(log.close()),
            epsilon=policy.epsilon(),
        )
        history.append(record)
        setup.on_round(record)
        if last or plan.reached(record.accuracy):
            break
    assert result is not None
    return SchemeResult(
        history=history,
        final=result,
        server_memory=server_memory,
        client_memory=client_memory,
        traffic=traffic,
        energy=energy,
        sim_time_s=sim_time,
        parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=sum(p.numel() for p in trainable_parameters(model)),
        participation=log.totals,
        aggregations=policy.notes,
        adapter=dict(global_state),
        client_steps=steps_taken,
        secure_aggregation=None if policy.secure is None else policy.secure.totals,
    )
