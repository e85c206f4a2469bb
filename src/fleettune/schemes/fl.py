"""`fl`: FedAvg over LoRA adapters; every client holds the whole model and trains locally."""

from __future__ import annotations

import time

from fleettune.aggregation import fedavg, sample_weights
from fleettune.codec import encode_state
from fleettune.compression import UpdateLink
from fleettune.fleet.cost import compute_s, downlink_s, uplink_s
from fleettune.models.adapters import AdapterState, read_adapter, write_adapter
from fleettune.runtime.ledger import EnergyLedger, TrafficLedger
from fleettune.runtime.memory import MemoryBreakdown
from fleettune.runtime.progress import RoundRecord
from fleettune.runtime.sim.flop_book import FlopBook
from fleettune.schemes.base import SCHEMES, RunSetup, SchemeResult
from fleettune.schemes.local import train_local
from fleettune.schemes.seeding import seeded_full_model
from fleettune.training import trainable_parameters


def clients_per_round(total: int, fraction: float) -> int:
    return max(1, round(total * fraction))


@SCHEMES.register("fl")
def run_fl(setup: RunSetup) -> SchemeResult:
    """Each round: the sampled clients download the global adapter, train `local_steps` (or
    `local_epochs` of their data), upload their adapter; the server averages them weighted by
    sample counts. One model object plays every client in turn (their weights are identical)."""
    plan = setup.plan
    model = seeded_full_model(setup)
    global_state = read_adapter(model.peft)
    streams = {c.id: setup.batches.stream(c.train, setup.rng(1, i)) for i, c in enumerate(setup.clients)}
    sampler = setup.rng(2)
    per_round = clients_per_round(len(setup.clients), plan.client_fraction)
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
    for round_index in range(plan.rounds):
        chosen = sorted(sampler.choice(len(setup.clients), size=per_round, replace=False))
        payloads: list[bytes] = []
        views: list[AdapterState] = []
        counts: list[int] = []
        losses: list[float] = []
        slowest = 0.0
        for index in chosen:
            client = setup.clients[index]
            downlink = downlinks[client.id].send(global_state)
            traffic.down(client.id, downlink)
            delivered = downlinks[client.id].receive(downlink)
            uplinks[client.id].rebase(delivered)
            write_adapter(model.peft, delivered)
            steps = plan.local_steps
            if plan.local_epochs is not None:
                steps = max(1, round(plan.local_epochs * setup.batches.steps_per_epoch(client.train)))
            run = train_local(
                model,
                streams[client.id],
                steps,
                lr=plan.lr,
                weight_decay=plan.weight_decay,
                schedule=plan.lr_schedule,
                schedule_offset=round_index,
                schedule_total=plan.rounds,
                max_grad_norm=plan.max_grad_norm,
                received_bytes=len(downlink),
                flop_book=book,
            )
            upload = uplinks[client.id].send(read_adapter(model.peft))
            traffic.up(client.id, upload)
            payloads.append(upload)
            views.append(uplinks[client.id].receive(upload))
            counts.append(len(client.train))
            losses.append(run.mean_loss)
            device = client.device
            busy = (
                downlink_s(device, len(downlink))
                + compute_s(run.flops, device.hardware)
                + uplink_s(device, len(upload))
            )
            energy.client_busy(client.id, device.hardware.power_w, busy)
            previous = client_memory.get(client.id)
            client_memory[client.id] = run.memory if previous is None else previous.peak_with(run.memory)
            slowest = max(slowest, busy)
        global_state = fedavg(views, sample_weights(counts))
        # Averaging is priced like every other computation: 2 FLOPs per value per client.
        aggregation_s = compute_s(2 * sum(t.numel() for t in global_state.values()) * len(payloads), setup.server)
        energy.server_busy(setup.server.power_w, aggregation_s)
        held = len(encode_state(global_state))
        server_memory = server_memory.peak_with(MemoryBreakdown(trainable=held, received=sum(len(p) for p in payloads)))
        # Clients download, train and upload in parallel: the round lasts as long as its slowest
        # client, then the aggregation.
        sim_time += slowest + aggregation_s
        last = round_index == plan.rounds - 1
        result = None
        if last or (round_index + 1) % plan.eval_every == 0:
            write_adapter(model.peft, global_state)
            result = setup.evaluator(model.logits)
        weights = sample_weights(counts)
        record = RoundRecord(
            round=round_index + 1,
            sim_time_s=sim_time,
            wall_time_s=time.perf_counter() - started,
            train_loss=sum(w * loss for w, loss in zip(weights, losses, strict=True)),
            accuracy=result.scores.accuracy if result else None,
            macro_f1=result.scores.macro_f1 if result else None,
        )
        history.append(record)
        setup.on_round(record)
        if plan.reached(record.accuracy):
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
    )
