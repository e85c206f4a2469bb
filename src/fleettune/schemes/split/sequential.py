"""`sl` and `cpsl`: one server-side adapter that clients (or clusters of clients) train in turns."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Protocol, TypeVar

from fleettune.draws import global_rng_kept, server_draws
from fleettune.fleet import Device
from fleettune.runtime.sim.clock import StepPhases, Timeline, one_server_step
from fleettune.runtime.sim.cutoffs import Cut
from fleettune.schemes.base import SCHEMES, RunSetup, SchemeResult
from fleettune.schemes.split.attendance import Attendance, ClientLoss, kept_losses, split_step
from fleettune.schemes.split.engine import (
    Forwarded,
    Served,
    SplitContext,
    aggregate,
    build_clients,
    cuts_of,
    download_parts,
    finish,
    initial_state,
    record_round,
    serve,
    upload_parts,
)
from fleettune.schemes.split.servers import Gradients, SharedAdapter


class _OnDevice(Protocol):
    @property
    def device(self) -> Device: ...


Party = TypeVar("Party", bound=_OnDevice)


CLUSTER_RULES = ("speed", "cut")


def _speed(party: _OnDevice) -> float:
    return party.device.hardware.tflops * party.device.hardware.efficiency


def turn_clusters(clients: Sequence[Party], size: int, by: str = "speed") -> list[list[Party]]:
    """The clusters that take turns, in turn order. "speed": `size` clients of similar speed (peak TFLOPS x
    efficiency) each, fastest first. "cut": the clients that share a cut layer, deepest cut first, at most
    `size` to a cluster (fastest first within a cut), so that a cluster's members train one client stage."""
    ranked = sorted(clients, key=lambda c: -_speed(c))
    if by == "speed":
        return [list(ranked[i : i + size]) for i in range(0, len(ranked), size)]
    if by != "cut":
        raise ValueError(f"unknown cluster rule {by!r}; expected one of {CLUSTER_RULES}")
    clusters = []
    for cut in sorted({int(c.device.cut_layer) for c in ranked}, reverse=True):
        sharing = [c for c in ranked if int(c.device.cut_layer) == cut]
        clusters += [sharing[i : i + size] for i in range(0, len(sharing), size)]
    return clusters


TURN_POLICY = "fifo"  # the one shared adapter serves a turn's members first come, first served


def _fifo(phases: Sequence[StepPhases], round_index: int, t0: float) -> Timeline:
    return one_server_step(phases, TURN_POLICY, round_index, t0)


class _TurnServer:
    """The shared adapter's side of a turn. When devices may leave, each member's gradient is kept
    apart so that the step uses only those of members that complete the turn: a member drawn to
    disconnect this round never counts (the server learns nothing from its batches), and a member cut
    by the deadline stops counting from the step it is cut in."""

    def __init__(self, ctx: SplitContext, server: SharedAdapter, doomed: frozenset[str]) -> None:
        self.ctx = ctx
        self.server = server
        self.apart = ctx.participation.may_drop
        self.doomed = doomed
        self.taken: dict[str, Gradients] = {}

    def serve_all(self, sent: list[Forwarded]) -> list[Served]:
        # The server's one adapter learns from the cluster's mean loss, as from one batch.
        served = []
        for s in sent:
            served.append(serve(self.ctx, s, loss_weight=1.0 / len(sent)))
            if self.apart:
                self.taken[s.client.id] = self.server.take_gradients()
        return served

    def step(self, cut: Cut) -> None:
        if not self.apart:
            self.server.step([], self.ctx.factor())
            return
        kept = [c for c in self.taken if c not in cut.left and c not in self.doomed]
        if kept:
            self.server.step_on([self.taken[c] for c in kept], len(self.taken) / len(kept), self.ctx.factor())
        self.taken = {}


def _run_turns(setup: RunSetup, scheme: str) -> SchemeResult:
    """Clusters take turns each round; inside a cluster clients run in parallel against the server,
    whose one adapter steps once per cluster step; client-side adapters are averaged at the cluster's
    end and handed to the next. Split learning is the case of clusters of one client. Offline members
    skip their cluster's turn; the deadline counts from the start of each turn."""
    with global_rng_kept():  # LoRA init, overwritten by the initial adapter, must not move the global RNG
        initial, evaluation = initial_state(setup)
        clients = build_clients(setup, initial)
        server = shared_adapter(setup)
    server.load(clients[0].id, initial)
    plan = setup.plan
    groups = clusters_for(setup, scheme, clients)
    steps_per_round = plan.local_steps * len(groups)
    ctx = SplitContext(setup, clients, server, evaluation, total_steps=plan.rounds * steps_per_round)
    full = initial
    for round_index in range(plan.rounds):
        turnout = ctx.participation.draw(round_index)
        online = set(ctx.log.begin(turnout, [c.id for c in clients]))
        losses: list[tuple[float, int]] = []
        for group in groups:
            team = [c for c in group if c.id in online]
            if not team:
                for _ in range(plan.local_steps):
                    ctx.note_step([])  # the learning-rate schedule moves on as planned
                continue
            deadline_at = ctx.participation.deadline_at(ctx.now_s)
            att = Attendance(ctx, turnout, team, plan.local_steps, True, deadline_at)
            att.save(None)
            before = server.snapshot(team[0].id) if ctx.participation.may_drop else None
            # Hand-off: the current adapter, split at each member's cut, goes to the cluster.
            download_parts(ctx, team, full, round_index, deadline_at)
            turn = _TurnServer(ctx, server, frozenset(turnout.drops))
            taken: list[ClientLoss] = []
            for step_index in range(plan.local_steps):
                taken += split_step(att, step_index, round_index, _fifo, turn.serve_all, turn.step)
            arrived, views = upload_parts(ctx, att.active(), round_index, att.prepared, att.carried, deadline_at)
            ctx.now_s = max(ctx.now_s, ctx.log.latest_leave_s)  # a member that left held the turn up to then
            att.restore_leavers(None)
            losses += kept_losses(taken, att.completed())
            if arrived:
                full = aggregate(ctx, views, arrived, round_index).evaluation if len(arrived) > 1 else views[0]
            elif before is not None:
                server.restore(team[0].id, before)  # nobody completed the turn: the server's steps are undone
            server.load(team[0].id, full)
        if record_round(ctx, round_index, losses, partial(dict, full)):
            break
    result = finish(ctx)
    result.adapter = dict(full)
    return result


def shared_adapter(setup: RunSetup) -> SharedAdapter:
    """The server of `sl` and `cpsl`: one model, one adapter that every client's activations train."""
    plan = setup.plan
    cuts = cuts_of(setup)
    draws = server_draws(plan.seed, list(cuts))
    return SharedAdapter(setup.new_model(), cuts, setup.lora, setup.task, plan.lr, plan.local_opt, draws)


def clusters_for(setup: RunSetup, scheme: str, parties: Sequence[Party]) -> list[list[Party]]:
    """The clusters of `parties` in turn order: one client each in `sl` (fastest first), the run's clusters
    (`cluster_size`, `cluster_by`) in `cpsl`. Simulation and deployment both take their turns from here."""
    if scheme == "sl":
        return turn_clusters(parties, 1)
    return turn_clusters(parties, setup.cluster_size, setup.cluster_by)


@SCHEMES.register("sl")
def run_sl(setup: RunSetup) -> SchemeResult:
    """Vanilla split learning: one client at a time, the client-side adapter passed client to client."""
    return _run_turns(setup, "sl")


@SCHEMES.register("cpsl")
def run_cpsl(setup: RunSetup) -> SchemeResult:
    """Cluster-parallel split learning (clusters of similar speed by default, or of the clients sharing a cut)."""
    return _run_turns(setup, "cpsl")
