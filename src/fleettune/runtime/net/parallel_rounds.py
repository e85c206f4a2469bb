"""Rounds of a deployed `mesfl` or `splitfed` run (the simulation's are in `schemes.split.parallel`).

The devices present take `local_steps` steps in parallel, the server serving each device's activations
with that device's own server-side adapter; every `aggregate_every` rounds they upload their client-side
adapters, which are joined with the server-side ones, combined and sent back split at each cut.
"""

from __future__ import annotations

from fleettune.aggregation.ranks import Aggregate
from fleettune.messages import CutActivations, CutGradients
from fleettune.models.adapters import AdapterState
from fleettune.runtime.net import checkpoint
from fleettune.runtime.net.base_fold import accumulate
from fleettune.runtime.net.board import Member
from fleettune.runtime.net.coordinator import Coordinator
from fleettune.runtime.net.secure_steps import collect_securely
from fleettune.runtime.net.steps import Loss, collect, download, drop, present, record, train_step, upload_request
from fleettune.schemes.split.engine import combine_views, fold_stacked


def run_parallel(c: Coordinator, first_round: int) -> None:
    plan = c.setup.plan
    total_steps = plan.rounds * plan.local_steps

    def continue_from(m: Member) -> AdapterState:
        return c.current.continue_from[m.id]

    def serve(m: Member, message: CutActivations, factor: float) -> tuple[CutGradients, float]:
        grads, loss, _ = c.server.process(message)
        c.server.step([m.id], factor)
        return grads, loss

    for round_index in range(first_round, plan.rounds):
        members = present(c)
        aggregating = (round_index + 1) % plan.aggregate_every == 0 or round_index == plan.rounds - 1
        for m in members:
            if m.id in c.fresh:  # (re)joined: its server side continues from the global adapter
                c.server.load(m.id, continue_from(m))
                c.fresh.discard(m.id)
        stale = [m for m in members if m.synced != c.version]
        members = download(c, stale, round_index, continue_from) + [m for m in members if m not in stale]
        members.sort(key=lambda m: m.index)
        saved = {m.id: c.server.snapshot(m.id) for m in members}
        losses: list[Loss] = []
        active = list(members)
        # At a plain aggregation each device sends its adapter as soon as it finishes its last step.
        uploads = upload_request(round_index) if aggregating and c.policy.secure is None else None
        for step in range(plan.local_steps):
            then = uploads if step == plan.local_steps - 1 else None
            active = train_step(c, active, round_index, losses, serve, total_steps, then)
        arrived: list[Member] = []
        combined: Aggregate | None = None
        if aggregating and c.policy.secure is not None:
            arrived, state = collect_securely(c, active, round_index)
            combined = None if state is None else Aggregate(state, {m: state for m in c.mix.ranks})
        elif aggregating:
            arrived, views = collect(c, active, round_index, asked=True)
            if arrived:
                ids, samples = [m.id for m in arrived], [m.samples for m in arrived]
                previous = c.current.evaluation
                combined = combine_views(c.mix, c.policy, views, ids, samples, round_index, c.version + 1, previous)
        completed = {m.id for m in (arrived if aggregating else active)}
        dropped = [m for m in members if m.id not in completed]
        drop(c, dropped, saved)
        if combined is not None:
            stacked = combined if combined.stacked is not None else None  # flora: folded into the base weights
            with c.board.cv:  # a device joining meanwhile gets the new global and the base updates together
                if stacked is not None:
                    folded = fold_stacked(c.mix, c.server, c.evaluation, stacked)
                    accumulate(c.base_update, folded)
                    for m in c.board.members.values():  # joined but not downloading it: owed at its next sync
                        if m.joined and m not in arrived:
                            accumulate(m.missed_base, c.client_part(m, folded))
                c.current = combined
                c.version += 1
            reached = download(c, arrived, round_index, continue_from, stacked)
            drop(c, [m for m in arrived if m not in reached], {})
            for client in c.setup.clients:
                c.server.load(client.id, c.current.continue_from[client.id])
                if stacked is not None:
                    c.server.restart(client.id)
        c.totals.client_rounds += len(members)
        c.totals.completed += len(completed)
        c.totals.dropped_disconnect += len(dropped)
        c.totals.rounds_without_update += int(aggregating and combined is None)
        kept = [(loss, n) for d, loss, n in losses if d in completed]
        ends = record(c, round_index, members, dropped, kept)
        if combined is not None and c.options.checkpoint_dir is not None:
            checkpoint.save(c, c.options.checkpoint_dir, round_index + 1)
        if ends:
            break
