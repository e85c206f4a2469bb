"""`central`: one LoRA model trained on all the training data at the server (the upper bound)."""

from __future__ import annotations

import time

from fleettune.draws import Role, party_draws
from fleettune.fleet.cost import compute_s
from fleettune.runtime.ledger import EnergyLedger, TrafficLedger
from fleettune.runtime.progress import RoundRecord
from fleettune.runtime.sim.flop_book import FlopBook
from fleettune.schemes.base import SCHEMES, RunSetup, SchemeResult
from fleettune.schemes.local import train_local
from fleettune.schemes.seeding import seeded_full_model
from fleettune.training import make_optimizer, trainable_parameters


@SCHEMES.register("central")
def run_central(setup: RunSetup) -> SchemeResult:
    """A round is one pass over the training data (an epoch); `plan.epochs` (may be fractional:
    the last round is then partial), else `plan.rounds` epochs."""
    plan = setup.plan
    model = seeded_full_model(setup)
    optimizer = make_optimizer(trainable_parameters(model), plan.lr, plan.local_opt)
    steps_per_round = setup.batches.steps_per_epoch(setup.train)
    epochs = plan.epochs if plan.epochs is not None else float(plan.rounds)
    total_steps = max(1, round(epochs * steps_per_round))
    rounds = -(-total_steps // steps_per_round)
    # The same stream a lone client 0 would draw: one-client split runs must see the same batches.
    stream = setup.batches.stream(setup.train, setup.rng(1, 0))
    draws = party_draws(plan.seed, Role.CENTRAL)
    energy = EnergyLedger()
    history: list[RoundRecord] = []
    memory = None
    started = time.perf_counter()
    sim_time = 0.0
    book = FlopBook()
    result = None
    step_losses: list[float] = []
    for round_index in range(rounds):
        run = train_local(
            model,
            stream,
            min(steps_per_round, total_steps - round_index * steps_per_round),
            lr=plan.lr,
            local_opt=plan.local_opt,
            schedule=plan.lr_schedule,
            schedule_offset=round_index * steps_per_round,
            schedule_total=total_steps,
            max_grad_norm=plan.max_grad_norm,
            received_bytes=0,
            draws=draws,
            optimizer=optimizer,
            flop_book=book,
        )
        step_losses += run.losses
        busy_s = compute_s(run.flops, setup.server)
        sim_time += busy_s
        energy.server_busy(setup.server.power_w, busy_s)
        memory = run.memory if memory is None else memory.peak_with(run.memory)
        stopping = setup.stop.requested
        last = round_index == rounds - 1 or stopping
        result = setup.evaluator(model.logits) if last or (round_index + 1) % plan.eval_every == 0 else None
        record = RoundRecord(
            round=round_index + 1,
            sim_time_s=sim_time,
            wall_time_s=time.perf_counter() - started,
            train_loss=run.mean_loss,
            accuracy=result.scores.accuracy if result else None,
            macro_f1=result.scores.macro_f1 if result else None,
        )
        history.append(record)
        setup.on_round(record)
        if stopping:
            break
    assert result is not None and memory is not None
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in trainable_parameters(model))
    return SchemeResult(
        history=history,
        final=result,
        server_memory=memory,
        client_memory={},
        traffic=TrafficLedger(),
        energy=energy,
        sim_time_s=sim_time,
        parameters=parameters,
        trainable_parameters=trainable,
        step_losses=step_losses,
    )
