"""`mesfl` and `splitfed`: clients compute in parallel every step; adapters aggregated every I rounds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from fleettune.aggregation import sample_weights
from fleettune.aggregation.ranks import Aggregate
from fleettune.draws import global_rng_kept, server_draws
from fleettune.models.adapters import AdapterState
from fleettune.runtime.sim.clock import StepPhases, Timeline, one_server_step, shared_processor_step
from fleettune.runtime.sim.cutoffs import StepClock
from fleettune.schemes.base import SCHEMES, RunSetup, SchemeResult
from fleettune.schemes.split.attendance import Attendance, ClientLoss, kept_losses, split_step
from fleettune.schemes.split.client import SplitClient
from fleettune.schemes.split.engine import (
    Forwarded,
    Served,
    SplitContext,
    aggregate,
    build_clients,
    cuts_of,
    download_parts,
    finish,
    fold_stacked,
    full_view,
    initial_state,
    masked_sizes,
    record_round,
    secure_aggregate,
    serve,
    upload_parts,
)
from fleettune.schemes.split.servers import PerClientAdapters, ServerCopies, ServerRole


def _run(setup: RunSetup, make_server: Callable[[], ServerRole], step_clock: StepClock) -> SchemeResult:
    """Rounds of `local_steps` steps of the online clients, aggregating every `aggregate_every` rounds
    over the clients that completed. A client that leaves a round goes back (both sides) to its state
    at the round's start; one that missed an aggregation downloads the global adapter when next online
    (with mixed ranks combined by stacking: every stacked adapter it missed, to fold into its base)."""
    with global_rng_kept():  # LoRA init, overwritten by the initial adapter, must not move the global RNG
        initial, evaluation = initial_state(setup)
        clients = build_clients(setup, initial)
        server = make_server()
    plan = setup.plan
    ctx = SplitContext(setup, clients, server, evaluation, total_steps=plan.rounds * plan.local_steps)
    mix = ctx.mix
    for client in clients:
        server.load(client.id, mix.start(initial, client.id))
    # The global adapter: changes only at an aggregation that someone completed.
    current = Aggregate(initial, {c.id: mix.start(initial, c.id) for c in clients})
    merged: list[Aggregate] = []  # stacked adapters folded into the base weights, in order (flora)
    version = 0
    synced = {c.id: version for c in clients}  # the global each client last received

    def missed(client: SplitClient) -> list[Aggregate]:
        return merged[synced[client.id] :] if mix.merges else []

    def continue_from(client: SplitClient) -> AdapterState:
        return current.continue_from[client.id]

    def serve_each(sent: list[Forwarded]) -> list[Served]:
        # The server's order changes only time: each client has its own server-side adapter.
        served = []
        for s in sent:
            out = serve(ctx, s)
            server.step([s.client.id], ctx.factor())
            served.append(out)
        return served

    for round_index in range(plan.rounds):
        turnout = ctx.participation.draw(round_index)
        online = set(ctx.log.begin(turnout, [c.id for c in clients]))
        aggregating = (round_index + 1) % plan.aggregate_every == 0 or round_index == plan.rounds - 1
        members = [c for c in clients if c.id in online]
        deadline_at = ctx.participation.deadline_at(ctx.now_s)
        masked = masked_sizes(ctx, [c.id for c in members], current.evaluation) if aggregating else None
        att = Attendance(ctx, turnout, members, plan.local_steps, aggregating, deadline_at, masked)
        att.save(server)
        stale = [c for c in members if synced[c.id] != version]
        if stale:
            # Back after missing an aggregation: first the current global adapter's client part.
            for client in download_parts(ctx, stale, continue_from, round_index, deadline_at, missed):
                synced[client.id] = version
        losses: list[ClientLoss] = []
        for step_index in range(plan.local_steps):
            losses += split_step(att, step_index, round_index, step_clock, serve_each)
        arrived: list[SplitClient] = []
        views: list[AdapterState] = []
        if aggregating:
            arrived, views = upload_parts(
                ctx, att.active(), round_index, att.prepared, att.carried, deadline_at, masked
            )
        ctx.now_s = max(ctx.now_s, ctx.log.latest_leave_s)  # a client that left held the round up to then
        att.restore_leavers(server)
        combined = None
        if arrived and ctx.policy.secure is not None:
            roster = [c.id for c in members]
            combined = secure_aggregate(ctx, views, arrived, roster, round_index, current.evaluation)
        elif arrived:
            combined = aggregate(ctx, views, arrived, round_index, version + 1, current.evaluation)
        if combined is not None:
            current = combined
            if current.stacked is not None:
                fold_stacked(mix, server, ctx.evaluation, current)
                merged.append(current)
            download_parts(ctx, arrived, continue_from, round_index, merges=missed)
            version += 1
            for client in arrived:
                synced[client.id] = version
            for client in clients:
                server.load(client.id, current.continue_from[client.id])
                if current.stacked is not None:
                    server.restart(client.id)
        global_state: Callable[[], AdapterState] = partial(dict, current.evaluation)
        if not aggregating and not mix.merges and ctx.policy.plain and ctx.policy.secure is None:
            # Between aggregations the global model is what an aggregation now would produce (with
            # stacking, that would change the base weights; with a robust rule, DP or an attack, it would
            # draw noise or take an accountant step; with secure aggregation, the server cannot average
            # in the clear: the last aggregate is evaluated instead).
            global_state = partial(_average_views, ctx, [c for c in clients if synced[c.id] == version])
        if record_round(ctx, round_index, kept_losses(losses, att.completed()), global_state):
            break
    result = finish(ctx)
    # The adapter last evaluated: the last aggregate, or (a run that stopped between aggregations, at its target
    # or on request) the average the clients' parts would give, which is what its final accuracy scored.
    assert ctx.evaluated is not None
    result.adapter = dict(ctx.evaluated)
    return result


def _average_views(ctx: SplitContext, clients: Sequence[SplitClient]) -> AdapterState:
    views = [full_view(ctx, c) for c in clients]
    weights = sample_weights([c.num_samples for c in clients])
    return ctx.mix.combine(views, [c.id for c in clients], weights).evaluation


@SCHEMES.register("mesfl")
def run_mesfl(setup: RunSetup) -> SchemeResult:
    """Memory-efficient split FL: one shared server model, a server-side adapter per client switched
    per client, served one at a time in the scheduler's order while clients compute in parallel."""

    policy = setup.scheduler

    def clock(phases: Sequence[StepPhases], round_index: int, t0: float) -> Timeline:
        return one_server_step(phases, policy, round_index, t0)

    return _run(setup, partial(shared_server, setup), clock)


@SCHEMES.register("splitfed")
def run_splitfed(setup: RunSetup) -> SchemeResult:
    """SplitFed-V1: one server-side model copy per client, all served at once (processor sharing)."""

    return _run(setup, partial(server_copies, setup), shared_processor_step)


def shared_server(setup: RunSetup) -> ServerRole:
    """`mesfl`'s server: one shared model, a named server-side adapter per client."""
    plan = setup.plan
    cuts = cuts_of(setup)
    specs = {c: setup.lora_for(c) for c in cuts}
    draws = server_draws(plan.seed, list(cuts))
    return PerClientAdapters(
        setup.new_model(), cuts, setup.lora, setup.task, plan.lr, plan.local_opt, draws, setup.switch_s, specs
    )


def server_copies(setup: RunSetup) -> ServerRole:
    """`splitfed`'s server: a server-side model copy per client."""
    plan = setup.plan
    cuts = cuts_of(setup)
    specs = {c: setup.lora_for(c) for c in cuts}
    draws = server_draws(plan.seed, list(cuts))
    return ServerCopies(setup.new_model, cuts, setup.lora, setup.task, plan.lr, plan.local_opt, draws, specs)
