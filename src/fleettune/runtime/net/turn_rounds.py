"""Rounds of a deployed `sl` or `cpsl` run (the simulation's are in `schemes.split.sequential`).

Clusters of devices (of one device in `sl`) take turns: the current adapter, split at each member's
cut, goes to the cluster; its members step in parallel against the server's one adapter, which steps
once per cluster step on the members' mean loss; the members' client-side adapters are averaged at the
turn's end and become the adapter handed to the next cluster.
"""

from __future__ import annotations

from collections.abc import Callable

from fleettune.aggregation.ranks import Aggregate
from fleettune.messages import CutActivations, CutGradients
from fleettune.models.adapters import AdapterState
from fleettune.runtime.net import checkpoint
from fleettune.runtime.net.board import Member
from fleettune.runtime.net.coordinator import Coordinator
from fleettune.runtime.net.steps import Ask, Loss, collect, download, drop, present, record, train_step, upload_request
from fleettune.schemes.split.engine import combine_views
from fleettune.schemes.split.sequential import clusters_for
from fleettune.schemes.split.servers import Gradients, SharedAdapter


def run_turns(c: Coordinator, first_round: int) -> None:
    plan = c.setup.plan
    server = c.server
    assert isinstance(server, SharedAdapter)
    fleet = sorted(c.board.members.values(), key=lambda m: m.index)
    groups = clusters_for(c.setup, c.prepared.config.scheme, fleet)
    total_steps = plan.rounds * plan.local_steps * len(groups)
    full = c.current.evaluation
    server.load(fleet[0].id, full)
    for round_index in range(first_round, plan.rounds):
        here = {m.id for m in present(c)}
        members: list[Member] = []
        dropped: list[Member] = []
        kept: list[tuple[float, int]] = []
        for group in groups:
            team = [m for m in group if m.id in here and m.joined]
            members += team
            if not team:
                c.steps_done += plan.local_steps  # the learning-rate schedule moves on as planned
                continue
            before = server.snapshot(team[0].id)
            active = download(c, team, round_index, _always(full))
            losses: list[Loss] = []
            for step in range(plan.local_steps):  # after its last step each member sends its adapter at once
                then = upload_request(round_index) if step == plan.local_steps - 1 else None
                active = _turn_step(c, server, active, round_index, losses, total_steps, then)
            arrived, views = collect(c, active, round_index, asked=True)
            lost = [m for m in team if m not in arrived]
            drop(c, lost, {})
            dropped += lost
            kept += [(loss, n) for d, loss, n in losses if d in {m.id for m in arrived}]
            if arrived:
                ids, samples = [m.id for m in arrived], [m.samples for m in arrived]
                if len(arrived) > 1:
                    full = combine_views(c.mix, c.policy, views, ids, samples, round_index, 0, None).evaluation
                else:
                    full = views[0]
            else:
                server.restore(team[0].id, before)  # nobody completed the turn: the server's steps are undone
            server.load(team[0].id, full)
            with c.board.cv:
                c.current = Aggregate(full, {m.id: full for m in fleet})
        c.totals.client_rounds += len(members)
        c.totals.completed += len(members) - len(dropped)
        c.totals.dropped_disconnect += len(dropped)
        ends = record(c, round_index, members, dropped, kept)
        if c.options.checkpoint_dir is not None:
            checkpoint.save(c, c.options.checkpoint_dir, round_index + 1)
        if ends:
            break


def _turn_step(
    c: Coordinator,
    server: SharedAdapter,
    team: list[Member],
    round_index: int,
    losses: list[Loss],
    total_steps: int,
    then: Ask | None,
) -> list[Member]:
    """One step of the cluster: each member's gradients are kept apart, and the server's adapter steps on
    those of the members that complete the step (scaled as if the others' loss had been counted)."""
    taken: dict[str, Gradients] = {}
    factor = 1.0

    def serve(m: Member, message: CutActivations, lr_factor: float) -> tuple[CutGradients, float]:
        nonlocal factor
        factor = lr_factor
        grads, loss, _ = server.process(message, loss_weight=1.0 / len(team))
        taken[m.id] = server.take_gradients()
        return grads, loss

    completed = train_step(c, team, round_index, losses, serve, total_steps, then)
    kept = [taken[m.id] for m in completed if m.id in taken]
    if kept:
        server.step_on(kept, len(taken) / len(kept), factor)
    return completed


def _always(state: AdapterState) -> Callable[[Member], AdapterState]:
    return lambda m: state
