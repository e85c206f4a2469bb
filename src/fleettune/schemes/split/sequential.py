"""`sl` and `cpsl`: one server-side adapter that clients (or clusters of clients) train in turns."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from fleettune.runtime.sim.clock import one_server_step
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
    initial_state,
    note_server_memory,
    record_round,
    serve,
    upload_parts,
)
from fleettune.schemes.split.servers import SharedAdapter


def speed_clusters(clients: Sequence[SplitClient], size: int) -> list[list[SplitClient]]:
    """Clusters of `size` clients with similar speed (peak TFLOPS x efficiency), fastest first."""
    ranked = sorted(clients, key=lambda c: -c.device.hardware.tflops * c.device.hardware.efficiency)
    return [list(ranked[i : i + size]) for i in range(0, len(ranked), size)]


def _run_turns(setup: RunSetup, clusters: list[list[SplitClient]] | None, cluster_size: int) -> SchemeResult:
    """Clusters take turns each round; inside a cluster clients run in parallel against the server,
    whose one adapter steps once per cluster step; client-side adapters are averaged at the cluster's
    end and handed to the next. Split learning is the case of clusters of one client."""
    with without_rng_draws():
        initial, evaluation = initial_state(setup)
        clients = build_clients(setup, initial)
        plan = setup.plan
        server = SharedAdapter(setup.new_model(), cuts_of(setup), setup.lora, setup.task, plan.lr, plan.weight_decay)
    server.load(clients[0].id, initial)
    plan = setup.plan
    groups = clusters or speed_clusters(clients, cluster_size)
    steps_per_round = plan.local_steps * len(groups)
    ctx = SplitContext(setup, clients, server, evaluation, total_steps=plan.rounds * steps_per_round)
    full = initial
    for round_index in range(plan.rounds):
        losses: list[tuple[float, int]] = []
        for group in groups:
            # Hand-off: the current adapter, split at each member's cut, goes to the cluster.
            download_parts(ctx, group, full, round_index)
            for _ in range(plan.local_steps):
                sent = [forward(ctx, c) for c in group]
                # The server's one adapter learns from the cluster's mean loss, as from one batch.
                served = [serve(ctx, s, loss_weight=1.0 / len(group)) for s in sent]
                server.step([c.id for c in group], ctx.factor())
                phases = [backward(ctx, s, o) for s, o in zip(sent, served, strict=True)]
                ctx.advance(one_server_step(phases, "fifo", round_index, ctx.now_s), round_index)
                note_server_memory(ctx, [c.id for c in group], sum(len(s.payload) for s in sent))
                losses += [(o.loss, o.samples) for o in served]
                ctx.note_step([(o.loss, o.samples) for o in served])
            views = upload_parts(ctx, group, round_index)
            full = aggregate(ctx, views, group, round_index) if len(group) > 1 else views[0]
            server.load(group[0].id, full)
        if record_round(ctx, round_index, losses, partial(dict, full)):
            break
    return finish(ctx)


@SCHEMES.register("sl")
def run_sl(setup: RunSetup) -> SchemeResult:
    """Vanilla split learning: one client at a time, the client-side adapter passed client to client."""
    return _run_turns(setup, None, cluster_size=1)


@SCHEMES.register("cpsl")
def run_cpsl(setup: RunSetup) -> SchemeResult:
    """Cluster-parallel split learning (clusters of similar speed by default)."""
    return _run_turns(setup, None, cluster_size=setup.cluster_size)
