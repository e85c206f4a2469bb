"""`mesfl` and `splitfed`: clients compute in parallel every step; adapters aggregated every I rounds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from fleettune.aggregation import fedavg, sample_weights
from fleettune.models.adapters import AdapterState
from fleettune.runtime.sim.clock import StepPhases, Timeline, one_server_step, shared_processor_step
from fleettune.schemes.base import SCHEMES, RunSetup, SchemeResult
from fleettune.schemes.seeding import without_rng_draws
from fleettune.schemes.split.client import SplitClient
from fleettune.schemes.split.engine import (
    SplitContext,
    aggregate,
    backward,
    build_clients,
    cuts_of,
    download_parts,
    finish,
    forward,
    full_view,
    initial_state,
    note_server_memory,
    record_round,
    serve,
    upload_parts,
)
from fleettune.schemes.split.servers import PerClientAdapters, ServerCopies, ServerRole

StepClock = Callable[[Sequence[StepPhases], int, float], Timeline]


def _run(setup: RunSetup, make_server: Callable[[], ServerRole], step_clock: StepClock) -> SchemeResult:
    with without_rng_draws():
        initial, evaluation = initial_state(setup)
        clients = build_clients(setup, initial)
        server = make_server()
    for client in clients:
        server.load(client.id, initial)
    plan = setup.plan
    ctx = SplitContext(setup, clients, server, evaluation, total_steps=plan.rounds * plan.local_steps)
    for round_index in range(plan.rounds):
        losses: list[tuple[float, int]] = []
        for _ in range(plan.local_steps):
            sent = [forward(ctx, c) for c in clients]
            # The server's order changes only time: each client has its own server-side adapter.
            served = []
            for s in sent:
                out = serve(ctx, s)
                server.step([s.client.id], ctx.factor())
                served.append(out)
            phases = [backward(ctx, s, o) for s, o in zip(sent, served, strict=True)]
            ctx.advance(step_clock(phases, round_index, ctx.now_s), round_index)
            note_server_memory(ctx, [c.id for c in clients], sum(len(s.payload) for s in sent))
            losses += [(o.loss, o.samples) for o in served]
            ctx.note_step([(o.loss, o.samples) for o in served])
        if (round_index + 1) % plan.aggregate_every == 0 or round_index == plan.rounds - 1:
            views = upload_parts(ctx, clients, round_index)
            full = aggregate(ctx, views, clients, round_index)
            download_parts(ctx, clients, full, round_index)
            for client in clients:
                server.load(client.id, full)
            stop = record_round(ctx, round_index, losses, partial(dict, full))
        else:
            # Between aggregations the global model is what an aggregation now would produce.
            stop = record_round(ctx, round_index, losses, partial(_average_views, ctx, clients))
        if stop:
            break
    return finish(ctx)


def _average_views(ctx: SplitContext, clients: Sequence[SplitClient]) -> AdapterState:
    return fedavg([full_view(ctx, c) for c in clients], sample_weights([c.num_samples for c in clients]))


@SCHEMES.register("mesfl")
def run_mesfl(setup: RunSetup) -> SchemeResult:
    """Memory-efficient split FL: one shared server model, a server-side adapter per client switched
    per client, served one at a time in the scheduler's order while clients compute in parallel."""

    def make_server() -> ServerRole:
        plan = setup.plan
        cuts = cuts_of(setup)
        return PerClientAdapters(
            setup.new_model(), cuts, setup.lora, setup.task, plan.lr, plan.weight_decay, setup.switch_s
        )

    policy = setup.scheduler

    def clock(phases: Sequence[StepPhases], round_index: int, t0: float) -> Timeline:
        return one_server_step(phases, policy, round_index, t0)

    return _run(setup, make_server, clock)


@SCHEMES.register("splitfed")
def run_splitfed(setup: RunSetup) -> SchemeResult:
    """SplitFed-V1: one server-side model copy per client, all served at once (processor sharing)."""

    def make_server() -> ServerRole:
        plan = setup.plan
        return ServerCopies(setup.new_model, cuts_of(setup), setup.lora, setup.task, plan.lr, plan.weight_decay)

    return _run(setup, make_server, shared_processor_step)
